// The Kotlin bindings on the JVM through JNA, against a real server on
// loopback (started by bindings/tests/with_site.py, which says where in the
// environment): errors, callbacks (a throwing KeyProvider too), async sync,
// object lifetimes, and the nurse's journey. Prints "N passed, M failed".
import java.nio.file.Files
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertTrue
import kotlinx.coroutines.async
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import uk.nhs.scrsync.*
import uk.nhs.scrsync.core.*

fun env(name: String): String = System.getenv(name) ?: error("$name is not set")

class Keys(private val byte: Byte) : KeyProvider {
    override fun keyEncryptionKey(): ByteArray = ByteArray(32) { byte }
}

class BrokenKeystore : KeyProvider {
    override fun keyEncryptionKey(): ByteArray = throw IllegalStateException("keystore locked")
}

fun tempDir(name: String): String = Files.createTempDirectory("scr-kt-$name").toString()

fun nurseTablet(name: String, token: String, byte: Byte): ScrDevice = runBlocking {
    val device = ScrDevice.open(tempDir(name), Keys(byte), DeviceSettings(DeviceClass.NURSE_TABLET, 300_000L))
    device.enroll(env("SCR_URL"), env("SCR_SERVER_KEY"), token)
    device
}

val withPermission = AccessRequest(RequestedBasis.Permission, null)

fun theNurseJourney() = runBlocking {
    val device = nurseTablet("journey", env("SCR_NURSE_TOKEN_1"), 1)
    val session = device.login(env("SCR_NURSE_USER"), env("SCR_NURSE_CARD"), env("SCR_NURSE_PASSCODE"))
    assertTrue(session.principal is GrantPrincipal.Staff)
    val patient = env("SCR_CASELOAD_PATIENT")
    // Async sync with a foreign observer, as a Flow.
    device.startSync(null)
    val statuses = mutableListOf<SyncStatus>()
    // A second observer on the running sync, collected as a Flow.
    val collecting = launch { device.syncStatuses().collect { synchronized(statuses) { statuses.add(it) } } }
    withTimeout(60_000) {
        while (device.holdings().none { it.nhsNumber == patient }) device.syncNow(20_000uL)
    }
    withTimeout(10_000) {
        while (synchronized(statuses) { statuses.none { it is SyncStatus.Idle } }) kotlinx.coroutines.delay(50)
    }
    // Permission first, typed refusal without it.
    val denied = assertFailsWith<ScrException.AccessDenied> { device.view(patient, withPermission) }
    assertEquals(DenyReason.PERMISSION_NEEDED, denied.reason)
    device.recordPermission(patient, false, true)
    val release = device.view(patient, withPermission)
    val core = release.view.compartments.first { it.compartment == Compartment.CORE }
    val allergy = core.entries.map { it.state }.filterIsInstance<EntryState.Current>()
        .map { it.v1.content }.filterIsInstance<EntryContent.Allergy>().single()
    assertEquals("Penicillin", allergy.substance.display)
    // A write is heard by a record observer (a Flow), which stops when cancelled.
    val heard = async { device.recordChanges(patient).first() }
    kotlinx.coroutines.delay(100)
    // Each record's sync status, as a Flow: the visit note shows as not yet
    // confirmed by the server, then as confirmed after a pass.
    val states = mutableListOf<List<RecordSyncState>>()
    val watching = launch { device.recordSyncUpdates().collect { synchronized(states) { states.add(it) } } }
    withTimeout(10_000) {
        while (synchronized(states) { states.isEmpty() }) kotlinx.coroutines.delay(20)
    }
    device.stopSync()
    val visit = EntryContent.EncounterSummary("home", "2026-11-27T09:00:00Z", "Dressing changed.")
    assertEquals(visit, device.addEntry(patient, visit, false, null).content)
    assertEquals(patient, withTimeout(10_000) { heard.await() })
    fun latest() = synchronized(states) { states.last().single { it.nhsNumber == patient } }
    withTimeout(10_000) { while (!latest().unsent) kotlinx.coroutines.delay(20) }
    assertTrue(device.recordSyncStates().single { it.nhsNumber == patient }.unsent)
    val confirmedBefore = latest().lastConfirmedMs
    device.startSync(null)
    val summary = device.syncNow(20_000uL)
    withTimeout(10_000) { while (latest().unsent) kotlinx.coroutines.delay(20) }
    val confirmed = latest().lastConfirmedMs
    assertTrue(confirmed != null && (confirmedBefore == null || confirmed > confirmedBefore))
    watching.cancel()
    assertTrue(summary.documents > 0uL)
    // An honest visit note: nothing refused by the server.
    assertEquals(0uL, summary.refusedByServer)
    assertEquals(emptyList(), device.serverRefusals())
    assertEquals(0uL, summary.quarantined)
    assertEquals(emptyList(), device.quarantined(patient))
    collecting.cancel()
    device.stopSync()
    device.close()
}

fun mistakesAreTypedErrors() = runBlocking {
    // A keystore that throws: a typed error, and opening again works.
    val dir = tempDir("errors")
    assertFailsWith<ScrException.KeyUnavailable> {
        ScrDevice.open(dir, BrokenKeystore(), DeviceSettings(DeviceClass.NURSE_TABLET, 300_000L))
    }
    val device = ScrDevice.open(dir, Keys(2), DeviceSettings(DeviceClass.NURSE_TABLET, 300_000L))
    assertFailsWith<ScrException.Locked> { device.unlock("anything") }
    assertFailsWith<ScrException.InvalidInput> { device.enroll("http://nowhere", env("SCR_SERVER_KEY"), "t") }
    device.enroll(env("SCR_URL"), env("SCR_SERVER_KEY"), env("SCR_NURSE_TOKEN_2"))
    assertFailsWith<ScrException.Refused> {
        device.login(env("SCR_NURSE_USER"), env("SCR_NURSE_CARD"), "wrong-passcode")
    }
    device.login(env("SCR_NURSE_USER"), env("SCR_NURSE_CARD"), env("SCR_NURSE_PASSCODE"))
    assertFailsWith<ScrException.InvalidInput> { device.view("9990001234", withPermission) }
    assertFailsWith<ScrException.NotFound> { device.view(env("SCR_UNLISTED_PATIENT"), withPermission) }
    device.lock()
    val wrong = assertFailsWith<ScrException.WrongPasscode> { device.unlock("not-hers") }
    assertEquals(4u, wrong.remaining)
    device.unlock(env("SCR_NURSE_PASSCODE"))
    assertFailsWith<ScrException.Offline> { device.syncNow(1_000uL) }
    device.close()
}

fun objectLifetimes() = runBlocking {
    val device = ScrDevice.open(tempDir("lifetimes"), Keys(3), DeviceSettings(DeviceClass.NURSE_TABLET, 300_000L))
    assertEquals(false, device.isEnrolled())
    device.close()
    // A destroyed object refuses calls instead of touching freed memory.
    assertFailsWith<IllegalStateException> { device.isEnrolled() }
    device.close() // twice is harmless
}

fun main() {
    val tests = listOf(
        "the nurse's journey" to ::theNurseJourney,
        "mistakes are typed errors" to ::mistakesAreTypedErrors,
        "object lifetimes" to ::objectLifetimes,
    )
    var passed = 0
    var failed = 0
    for ((name, test) in tests) {
        try {
            test()
            passed++
            println("ok   $name")
        } catch (e: Throwable) {
            failed++
            println("FAIL $name: $e")
            e.printStackTrace()
        }
    }
    println("$passed passed, $failed failed")
    if (failed > 0) kotlin.system.exitProcess(1)
}
