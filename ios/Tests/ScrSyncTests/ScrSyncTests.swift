// The Swift bindings under XCTest, against a real server on loopback
// (started by bindings/tests/with_site.py, which says where in the
// environment): errors, callbacks (a throwing KeyProvider too), async sync,
// object lifetimes, and the nurse's journey.
import Foundation
import XCTest

@testable import ScrSync

private func env(_ name: String) -> String {
    guard let value = ProcessInfo.processInfo.environment[name] else {
        fatalError("\(name) is not set")
    }
    return value
}

private final class Keys: KeyProvider, @unchecked Sendable {
    let byte: UInt8
    init(_ byte: UInt8) { self.byte = byte }
    func keyEncryptionKey() throws -> Data { Data(repeating: byte, count: 32) }
}

private struct KeystoreLocked: Error {}

private final class BrokenKeystore: KeyProvider, @unchecked Sendable {
    func keyEncryptionKey() throws -> Data { throw KeystoreLocked() }
}

private final class Statuses: SyncObserver, @unchecked Sendable {
    private let lock = NSLock()
    private var seen: [SyncStatus] = []
    func onStatus(status: SyncStatus) { lock.withLock { seen.append(status) } }
    var all: [SyncStatus] { lock.withLock { seen } }
}

private final class Changes: RecordObserver, @unchecked Sendable {
    private let lock = NSLock()
    private var heard = 0
    func onRecordChanged(nhsNumber: NhsNumber) { lock.withLock { heard += 1 } }
    var count: Int { lock.withLock { heard } }
}

private final class SyncStates: RecordSyncObserver, @unchecked Sendable {
    private let lock = NSLock()
    private var latest: [RecordSyncState] = []
    func onRecordSync(states: [RecordSyncState]) { lock.withLock { latest = states } }
    func of(_ nhsNumber: NhsNumber) -> RecordSyncState? {
        lock.withLock { latest.first { $0.nhsNumber == nhsNumber } }
    }
}

private func tempDir(_ name: String) -> String {
    let url = FileManager.default.temporaryDirectory
        .appendingPathComponent("scr-swift-\(name)-\(UUID().uuidString)")
    return url.path
}

private let settings = DeviceSettings(deviceClass: .nurseTablet, idleTimeoutMs: 300_000)
private let withPermission = AccessRequest(basis: .permission, selfClaim: nil)

private func eventually(_ what: String, _ condition: () -> Bool) async throws {
    for _ in 0..<200 {
        if condition() { return }
        try await Task.sleep(nanoseconds: 50_000_000)
    }
    XCTFail(what)
}

final class ScrSyncTests: XCTestCase {
    func testTheNurseJourney() async throws {
        let device = try ScrDevice.open(dataDir: tempDir("journey"), keyProvider: Keys(1), settings: settings)
        try await device.enroll(serverUrl: env("SCR_URL"), serverKeyHex: env("SCR_SERVER_KEY"), token: env("SCR_NURSE_TOKEN_1"))
        let session = try await device.login(userId: env("SCR_NURSE_USER"), cardSerial: env("SCR_NURSE_CARD"), passcode: env("SCR_NURSE_PASSCODE"))
        guard case .staff = session.principal else { return XCTFail("a staff session") }
        let statuses = Statuses()
        try await device.startSync(observer: statuses)
        let patient = env("SCR_CASELOAD_PATIENT")
        for _ in 0..<15 where !(try device.holdings().contains { $0.nhsNumber == patient }) {
            _ = try await device.syncNow(timeoutMs: 20_000)
        }
        XCTAssertTrue(try device.holdings().contains { $0.nhsNumber == patient })
        try await eventually("an idle state was observed") {
            statuses.all.contains { if case .idle = $0 { return true } else { return false } }
        }
        // Permission first: a typed refusal without it.
        XCTAssertThrowsError(try device.view(nhsNumber: patient, access: withPermission)) { error in
            guard case ScrError.AccessDenied(let reason, _) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(reason, .permissionNeeded)
        }
        try device.recordPermission(nhsNumber: patient, futureUse: false, granted: true)
        let release = try device.view(nhsNumber: patient, access: withPermission)
        let core = release.view.compartments.first { $0.compartment == .core }
        let allergies = (core?.entries ?? []).compactMap { entry -> String? in
            guard case .current(let version) = entry.state,
                  case .allergy(let substance, _, _) = version.content else { return nil }
            return substance.display
        }
        XCTAssertEqual(allergies, ["Penicillin"])
        // A write is heard by a record observer until its handle goes; each
        // record's sync status shows it unsent until the server confirms it.
        let changes = Changes()
        var handle: ObservationHandle? = try device.observeRecord(nhsNumber: patient, observer: changes)
        let syncStates = SyncStates()
        let syncHandle = try device.observeRecordSync(observer: syncStates)
        try await eventually("every record's status was heard") { syncStates.of(patient) != nil }
        try await device.stopSync()
        let visit = EntryContent.encounterSummary(setting: "home", occurredAt: "2026-11-27T09:00:00Z", note: "Dressing changed.")
        let version = try device.addEntry(nhsNumber: patient, content: visit, sensitive: false, selfClaim: nil)
        XCTAssertEqual(version.content, visit)
        try await eventually("the observer heard the write") { changes.count >= 1 }
        try await eventually("the record shows an unsent change") { syncStates.of(patient)?.unsent == true }
        XCTAssertEqual(try device.recordSyncStates().first { $0.nhsNumber == patient }?.unsent, true)
        try await device.startSync(observer: nil)
        XCTAssertNotNil(handle)
        handle = nil
        let heard = changes.count
        _ = try device.addEntry(nhsNumber: patient, content: visit, sensitive: false, selfClaim: nil)
        try await Task.sleep(nanoseconds: 300_000_000)
        XCTAssertEqual(changes.count, heard, "a dropped handle stops the observer")
        let summary = try await device.syncNow(timeoutMs: 20_000)
        XCTAssertGreaterThan(summary.documents, 0)
        _ = try await device.syncNow(timeoutMs: 20_000)
        try await eventually("the record shows as confirmed") { syncStates.of(patient)?.unsent == false }
        XCTAssertNotNil(syncStates.of(patient)?.lastConfirmedMs)
        syncHandle.cancel()
        // An honest visit note: nothing refused by the server.
        XCTAssertEqual(summary.refusedByServer, 0)
        let refused = await device.serverRefusals()
        XCTAssertTrue(refused.isEmpty)
        XCTAssertEqual(summary.quarantined, 0)
        XCTAssertTrue(try device.quarantined(nhsNumber: patient).isEmpty)
        try await device.stopSync()
    }

    func testMistakesAreTypedErrors() async throws {
        let dir = tempDir("errors")
        XCTAssertThrowsError(try ScrDevice.open(dataDir: dir, keyProvider: BrokenKeystore(), settings: settings)) { error in
            guard case ScrError.KeyUnavailable = error else { return XCTFail("\(error)") }
        }
        let device = try ScrDevice.open(dataDir: dir, keyProvider: Keys(2), settings: settings)
        XCTAssertThrowsError(try device.unlock(passcode: "anything")) { error in
            XCTAssertEqual(error as? ScrError, .Locked)
        }
        try await device.enroll(serverUrl: env("SCR_URL"), serverKeyHex: env("SCR_SERVER_KEY"), token: env("SCR_NURSE_TOKEN_2"))
        do {
            _ = try await device.login(userId: env("SCR_NURSE_USER"), cardSerial: env("SCR_NURSE_CARD"), passcode: "wrong-passcode")
            XCTFail("a wrong passcode logs in")
        } catch ScrError.Refused {}
        _ = try await device.login(userId: env("SCR_NURSE_USER"), cardSerial: env("SCR_NURSE_CARD"), passcode: env("SCR_NURSE_PASSCODE"))
        XCTAssertThrowsError(try device.view(nhsNumber: "9990001234", access: withPermission)) { error in
            guard case ScrError.InvalidInput = error else { return XCTFail("\(error)") }
        }
        XCTAssertThrowsError(try device.view(nhsNumber: env("SCR_UNLISTED_PATIENT"), access: withPermission)) { error in
            guard case ScrError.NotFound = error else { return XCTFail("\(error)") }
        }
        try device.lock()
        XCTAssertThrowsError(try device.unlock(passcode: "not-hers")) { error in
            XCTAssertEqual(error as? ScrError, .WrongPasscode(remaining: 4))
        }
        _ = try device.unlock(passcode: env("SCR_NURSE_PASSCODE"))
        do {
            _ = try await device.syncNow(timeoutMs: 1_000)
            XCTFail("sync ran without being started")
        } catch ScrError.Offline {}
    }

    func testObjectLifetimes() throws {
        weak var weakDevice: ScrDevice?
        do {
            let device = try ScrDevice.open(dataDir: tempDir("lifetimes"), keyProvider: Keys(3), settings: settings)
            XCTAssertFalse(try device.isEnrolled())
            weakDevice = device
        }
        XCTAssertNil(weakDevice, "the device is freed when the app lets go")
    }
}
