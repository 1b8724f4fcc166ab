"""The patient, paramedic and nurse journeys through the Python bindings
alone, against a real server on loopback; and the errors an app must get
as typed exceptions, never a crash."""

import asyncio
import threading
import time

import pytest

from scr_sync import scr_bindings as scr
from scr_sync import scr_core as core

from scr_site import BORN, NURSE, PARAMEDIC


class Keys(scr.KeyProvider):
    """The app's keystore: a fixed 32-byte key per device."""

    def __init__(self, byte):
        self.byte = byte

    def key_encryption_key(self):
        return bytes([self.byte]) * 32


class BrokenKeystore(scr.KeyProvider):
    def key_encryption_key(self):
        raise ValueError("keystore is locked")


class Statuses(scr.SyncObserver):
    def __init__(self):
        self.seen = []
        self.lock = threading.Lock()

    def on_status(self, status):
        with self.lock:
            self.seen.append(status)


class SyncStates(scr.RecordSyncObserver):
    """The latest sync status of every held record, as last heard."""

    def __init__(self):
        self.latest = []
        self.heard = 0
        self.lock = threading.Lock()

    def on_record_sync(self, states):
        with self.lock:
            self.latest = states
            self.heard += 1

    def of(self, nhs_number):
        with self.lock:
            return next((s for s in self.latest if s.nhs_number == nhs_number), None)


class Changes(scr.RecordObserver):
    def __init__(self):
        self.count = 0

    def on_record_changed(self, nhs_number):
        self.count += 1


def run(coroutine):
    return asyncio.run(coroutine)


def settings(device_class):
    return core.DeviceSettings(device_class=device_class, idle_timeout_ms=300_000)


def with_permission():
    return core.AccessRequest(basis=core.RequestedBasis.PERMISSION(), self_claim=None)


def emergency(self_claim=None):
    return core.AccessRequest(basis=core.RequestedBasis.EMERGENCY(), self_claim=self_claim)


def sync_until(device, done, passes=15):
    for _ in range(passes):
        run(device.sync_now(20_000))
        if done():
            return
        time.sleep(0.2)
    raise AssertionError("sync did not get there")


def eventually(condition, what, seconds=10):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(what)
        time.sleep(0.05)


def held(device):
    return {h.nhs_number for h in device.holdings()}


def entries(release, compartment):
    view = next((c for c in release.view.compartments if c.compartment == compartment), None)
    return [] if view is None else view.entries


def current_contents(release, compartment):
    out = []
    for e in entries(release, compartment):
        if e.state.is_CURRENT():
            out.append(e.state[0].content)
    return out


def enrolled(site, tmp_path, name, device_class, org, byte):
    device = scr.ScrDevice.open(str(tmp_path / name), Keys(byte), settings(device_class))
    assert not device.is_enrolled()
    kind = {core.DeviceClass.NURSE_TABLET: "nurse-tablet",
            core.DeviceClass.AMBULANCE_TABLET: "ambulance-tablet"}[device_class]
    run(device.enroll(site.url, site.server_key, site.enroll_token(org, kind)))
    assert device.is_enrolled() and len(device.device_key()) == 64
    return device


@pytest.fixture(scope="module")
def nurse(site, tmp_path_factory):
    """Jo's tablet, logged in, her caseload synced, one visit written offline."""
    tmp = tmp_path_factory.mktemp("nurse")
    device = enrolled(site, tmp, "tablet", core.DeviceClass.NURSE_TABLET, "RX1", 1)
    info = run(device.login(NURSE["user_id"], NURSE["card"], NURSE["passcode"]))
    assert info.principal.is_STAFF() and info.principal.organisation == "RX1"
    statuses = Statuses()
    run(device.start_sync(statuses))
    sync_until(device, lambda: site.caseload_patient in held(device))
    yield device, statuses
    run(device.stop_sync())


def test_the_nurse_reads_her_caseload_and_writes_a_visit_offline(site, nurse):
    device, statuses = nurse
    patient = site.caseload_patient
    # Permission is asked each time: without it the view is refused, typed.
    with pytest.raises(scr.ScrError.AccessDenied) as denied:
        device.view(patient, with_permission())
    assert denied.value.reason == core.DenyReason.PERMISSION_NEEDED
    device.record_permission(patient, False, True)
    release = device.view(patient, with_permission())
    allergies = [c for c in current_contents(release, core.Compartment.CORE) if c.is_ALLERGY()]
    assert [a.substance.display for a in allergies] == ["Penicillin"]
    assert release.audit_event_id

    changes = Changes()
    handle = device.observe_record(patient, changes)
    sync_states = SyncStates()
    sync_handle = device.observe_record_sync(sync_states)
    eventually(lambda: sync_states.of(patient) is not None, "every record's status is heard at once")
    try:
        # Offline: the write is kept, then merged when the tablet reconnects.
        run(device.stop_sync())
        visit = core.EntryContent.ENCOUNTER_SUMMARY(
            setting="home", occurred_at="2026-11-27T09:00:00Z", note="Dressing changed; healing.")
        version = device.add_entry(patient, visit, False, None)
        assert version.content == visit
        eventually(lambda: changes.count >= 1, "the observer hears the local write")
        # The visit note has not reached the server: the record says so.
        eventually(lambda: sync_states.of(patient).unsent, "the record shows an unsent change")
        mine = [s for s in device.record_sync_states() if s.nhs_number == patient]
        assert len(mine) == 1 and mine[0].unsent
    finally:
        handle.cancel()
    # Cancelled: a second write is not heard.
    heard = changes.count
    device.add_entry(patient, visit, False, None)
    time.sleep(0.3)
    assert changes.count == heard
    run(device.start_sync(statuses))
    sync_until(device, lambda: any(
        isinstance(s, scr.SyncStatus.IDLE) and s.summary.in_step == s.summary.documents
        and s.summary.documents > 0 for s in statuses.seen))
    assert any(isinstance(s, scr.SyncStatus.SYNCING) for s in statuses.seen)
    # Confirmed by the server: no longer unsent, with when it was confirmed.
    eventually(lambda: not sync_states.of(patient).unsent, "the record shows as confirmed")
    assert sync_states.of(patient).last_confirmed_ms is not None
    assert all(not s.unsent for s in device.record_sync_states() if s.nhs_number == patient)
    sync_handle.cancel()
    heard = sync_states.heard
    device.add_entry(patient, visit, False, None)
    time.sleep(0.3)
    assert sync_states.heard == heard, "a cancelled observer hears nothing"
    # Written offline by an honest tablet: the server refused none of it.
    assert all(s.summary.refused_by_server == 0
               for s in statuses.seen if isinstance(s, scr.SyncStatus.IDLE))
    assert run(device.server_refusals()) == []
    assert device.quarantined(patient) == []
    backlog = device.audit_backlog()
    assert not backlog.overdue


def test_the_patient_sees_her_record_and_who_looked_and_changes_what_is_shared(
        site, nurse, tmp_path):
    patient = site.caseload_patient
    token = site.patient_token(patient, "tulip-2468")
    phone = scr.ScrDevice.open(str(tmp_path / "phone"), Keys(2),
                               settings(core.DeviceClass.PATIENT_PHONE))
    run(phone.enroll(site.url, site.server_key, token))
    info = run(phone.login("patient", "", "tulip-2468"))
    assert info.principal.is_PATIENT() and info.principal.nhs_number == patient
    run(phone.start_sync(None))
    try:
        sync_until(phone, lambda: patient in held(phone))
        # The nurse's visit reached the server and her phone.
        def has_visit():
            release = phone.view(patient, with_permission())
            return any(c.is_ENCOUNTER_SUMMARY()
                       for c in current_contents(release, core.Compartment.CARE_EVENTS))
        sync_until(phone, has_visit)
        # Who looked: the nurse, by name, role and basis.
        log = run(phone.access_log(patient))
        nurse_views = [e for e in log if e.user == NURSE["user_id"] and e.action == "view"
                       and e.outcome == "permitted"]
        assert nurse_views and nurse_views[0].user_name == "Jo Nurse"
        assert nurse_views[0].basis == "permission" and nurse_views[0].organisation == "RX1"
        # She chooses core only, and can change her mind back.
        phone.set_patient_choices(patient, core.SharingChoice.CORE_ONLY, False)
        phone.set_patient_choices(patient, core.SharingChoice.CORE_AND_ADDITIONAL, False)
        unsent = phone.audit_trail(patient)
        assert sum(1 for e in unsent if e.action == "change-choice") == 2
        # Once uploaded, the same two events are in the server's log, once each.
        run(phone.sync_now(20_000))
        log = run(phone.access_log(patient))
        choices = [e.id for e in log if e.action == "change-choice"]
        assert sorted(choices) == sorted(e.id for e in unsent if e.action == "change-choice")
    finally:
        run(phone.stop_sync())


def test_the_paramedic_opens_an_unlisted_patient_in_an_emergency_and_forgets_them(
        site, tmp_path):
    device = enrolled(site, tmp_path, "ambulance", core.DeviceClass.AMBULANCE_TABLET, "RYA", 3)
    run(device.login(PARAMEDIC["user_id"], PARAMEDIC["card"], PARAMEDIC["passcode"]))
    run(device.start_sync(None))
    try:
        patient = site.unlisted_patient
        with pytest.raises(scr.ScrError.NotFound):
            device.view(patient, emergency())
        with pytest.raises(scr.ScrError.NotFound):
            run(device.open_encounter(patient, "1999-01-01",
                                      emergency(core.AlertReason.SELF_CLAIM_EMERGENCY)))
        encounter = run(device.open_encounter(
            patient, BORN, emergency(core.AlertReason.SELF_CLAIM_EMERGENCY)))
        assert encounter
        release = device.view(patient, emergency())
        assert any(c.is_ALLERGY() for c in current_contents(release, core.Compartment.CORE))
        run(device.close_encounter(encounter))
        assert patient not in held(device)
    finally:
        run(device.stop_sync())


def test_mistakes_are_typed_errors_and_nothing_crashes(site, tmp_path):
    # A keystore that throws: a typed error, and the app can try again.
    with pytest.raises(scr.ScrError.KeyUnavailable):
        scr.ScrDevice.open(str(tmp_path / "d"), BrokenKeystore(),
                           settings(core.DeviceClass.NURSE_TABLET))
    device = scr.ScrDevice.open(str(tmp_path / "d"), Keys(4),
                                settings(core.DeviceClass.NURSE_TABLET))
    # Not enrolled or logged in yet: locked.
    with pytest.raises(scr.ScrError.Locked):
        device.unlock("anything")
    with pytest.raises(scr.ScrError.InvalidInput):
        run(device.enroll("http://example.invalid", site.server_key, "token"))
    with pytest.raises(scr.ScrError.InvalidInput):
        run(device.enroll(site.url, "not-a-key", "token"))
    # A spent or made-up token: the server refuses.
    with pytest.raises((scr.ScrError.Refused, scr.ScrError.Offline)):
        run(device.enroll(site.url, site.server_key, "made-up-token"))
    run(device.enroll(site.url, site.server_key, site.enroll_token("RX1", "nurse-tablet")))
    with pytest.raises(scr.ScrError.Refused):
        run(device.login(NURSE["user_id"], NURSE["card"], "wrong-passcode"))
    run(device.login(NURSE["user_id"], NURSE["card"], NURSE["passcode"]))
    # An NHS number that fails its check digit never reaches the core.
    with pytest.raises(scr.ScrError.InvalidInput):
        device.view("9990001234", with_permission())
    with pytest.raises(scr.ScrError.NotFound):
        device.view(site.unlisted_patient, with_permission())
    device.lock()
    with pytest.raises(scr.ScrError.Locked):
        device.holdings()
    with pytest.raises(scr.ScrError.WrongPasscode) as wrong:
        device.unlock("not-her-passcode")
    assert wrong.value.remaining == 4
    assert device.unlock(NURSE["passcode"]).principal.is_STAFF()
    # Sync not started: the calls that need it say so.
    with pytest.raises(scr.ScrError.Offline):
        run(device.sync_now(1000))
    assert isinstance(run(device.sync_status()), scr.SyncStatus.OFFLINE)
    # She logs out: the server retires her grant, and her passcode no
    # longer unlocks the tablet; only an online login does.
    assert run(device.logout()) is True
    with pytest.raises(scr.ScrError.Locked):
        device.unlock(NURSE["passcode"])
    run(device.login(NURSE["user_id"], NURSE["card"], NURSE["passcode"]))
