//! The story the demo tells, step by step, each step checked.

use std::path::Path;
use std::time::Instant;

use scr_core::NhsNumber;
use scr_core::access::AccessRequest;
use scr_core::access::{AlertReason, DenyReason};
use scr_core::engine::EngineError;
use scr_core::fixtures::sample_entry;
use scr_core::grant::RelationshipKind;
use scr_core::record::{Compartment, SharingChoice};
use scr_core::retention::DeviceClass;

use super::site::{
    CORE_ONLY, SHARED, Site, ambulance_privacy_officer, community_privacy_officer, log_in, nurse,
    paramedic, visit_note,
};
use super::{DemoError, Story, fail};
use crate::archive::AlertOutcome;

const PATIENT: u32 = 4242;
const INCIDENT: &str = "INC-77";
const VISIT: &str = "Leg ulcer dressing changed; healing well.";
const HANDOVER: &str = "Found on floor, confused; BM 2.1, glucose given; to ED.";

pub(crate) async fn tell(story: &mut Story, dir: &Path) -> Result<(), DemoError> {
    println!("SCR Sync demo: the server, three devices and one synthetic patient, over loopback.");
    println!();

    let t = Instant::now();
    let site = Site::start(dir).await.map_err(fail("server"))?;
    story.check(
        &format!(
            "server listening on {} (Noise channel), its SQLite store in {}; /health answers",
            site.url(),
            dir.join("server").display()
        ),
        healthy(site.server.health_addr).await,
        t,
    );

    let t = Instant::now();
    let nhs = site
        .load_patient(PATIENT, SharingChoice::CoreAndAdditional)
        .map_err(fail("load record"))?;
    site.assign(&nurse(), nhs, RelationshipKind::Caseload)
        .map_err(fail("caseload"))?;
    let incident = RelationshipKind::Incident {
        incident_id: INCIDENT.into(),
    };
    site.assign(&paramedic(), nhs, incident)
        .map_err(fail("incident"))?;
    let loaded = site.server_notes(&nhs).map_err(fail("load record"))?.len() == 1;
    story.check(
        "admin: a synthetic patient (test-range NHS number) loaded, on nurse Jo's caseload and paramedic Sam's incident",
        loaded,
        t,
    );

    let result = journey(story, &site, nhs).await;
    let t = Instant::now();
    let sync_addr = site.server.sync_addr;
    site.shutdown().await;
    let closed = tokio::net::TcpStream::connect(sync_addr).await.is_err();
    story.check("server stopped cleanly: its port is closed", closed, t);
    result?;

    let t = Instant::now();
    let clean = no_clear_text(dir, &nhs).map_err(fail("scan files"))?;
    story.check(
        "no NHS number, name, drug or note text is in clear in any file the server or the devices wrote",
        clean,
        t,
    );
    Ok(())
}

async fn journey(story: &mut Story, site: &Site, nhs: NhsNumber) -> Result<(), DemoError> {
    let t = Instant::now();
    let tablet = site
        .tablet("nurse-tablet", DeviceClass::NurseTablet, "RX1")
        .await
        .map_err(fail("enroll nurse tablet"))?;
    log_in(&tablet, &nurse())
        .await
        .map_err(fail("nurse login"))?;
    let ambulance = site
        .tablet("ambulance-tablet", DeviceClass::AmbulanceTablet, "RYA")
        .await
        .map_err(fail("enroll ambulance tablet"))?;
    log_in(&ambulance, &paramedic())
        .await
        .map_err(fail("paramedic login"))?;
    let mut enrolled = true;
    for app in [&tablet, &ambulance] {
        let key = app.device.device_key().map_err(fail("device key"))?;
        let key: Option<[u8; 32]> =
            scr_core::channel::from_hex(&key).and_then(|k| k.try_into().ok());
        enrolled &= key.is_some_and(|k| site.server.directory.is_active(&k));
        let engine = app.engine().map_err(fail("engine"))?;
        enrolled &= engine.session().map_err(fail("session"))?.is_some();
    }
    story.check(
        "nurse and ambulance tablets enroll (one-time tokens, pinned server key) and log in online",
        enrolled,
        t,
    );

    let t = Instant::now();
    for app in [&tablet, &ambulance] {
        app.device.start_sync().await.map_err(fail("start sync"))?;
    }
    let caseload = tablet
        .sync_until(|a| a.held(&nhs) == SHARED)
        .await
        .map_err(fail("nurse sync"))?;
    let incident = ambulance
        .sync_until(|a| a.held(&nhs) == SHARED)
        .await
        .map_err(fail("ambulance sync"))?;
    story.check(
        "both tablets sync the record they may hold: core, additional, care events, preferences, choices; nothing sensitive",
        caseload && incident,
        t,
    );

    let t = Instant::now();
    let engine = tablet.engine().map_err(fail("nurse engine"))?;
    let asked_first = matches!(
        engine.view(&nhs, AccessRequest::with_permission()),
        Err(EngineError::Denied(DenyReason::PermissionNeeded))
    );
    engine
        .record_permission(&nhs, false, true)
        .map_err(fail("permission"))?;
    let seen = engine
        .view(&nhs, AccessRequest::with_permission())
        .map_err(fail("nurse view"))?;
    let released: Vec<_> = seen
        .view
        .compartments
        .iter()
        .map(|c| c.compartment)
        .collect();
    story.check(
        "Jo must ask first; with the patient's permission her tablet releases the record, audited before it is shown",
        asked_first && released.contains(&Compartment::Additional) && !seen.audit.id.is_empty(),
        t,
    );

    println!("-- no signal: both tablets work offline --");
    let t = Instant::now();
    tablet.device.stop_sync().await;
    ambulance.device.stop_sync().await;
    engine
        .add_entry(&nhs, visit_note("home", VISIT), false, None)
        .map_err(fail("visit note"))?;
    story.check(
        "offline, Jo writes her visit summary; it is kept on the tablet, sealed",
        tablet
            .notes(&nhs, AccessRequest::with_permission())
            .iter()
            .any(|n| n == VISIT),
        t,
    );

    let t = Instant::now();
    let amb = ambulance.engine().map_err(fail("ambulance engine"))?;
    let cannot_ask = matches!(
        amb.view(&nhs, AccessRequest::with_permission()),
        Err(EngineError::Denied(DenyReason::PermissionNeeded))
    );
    let emergency = amb
        .view(&nhs, AccessRequest::emergency())
        .map_err(fail("emergency access"))?;
    let alert = emergency
        .audit
        .alerts
        .iter()
        .any(|a| a.alert_type().code() == 2 && a.reason() == AlertReason::Emergency);
    amb.add_entry(&nhs, visit_note("ambulance", HANDOVER), false, None)
        .map_err(fail("handover note"))?;
    story.check(
        "the patient cannot consent and there is no signal: Sam uses emergency access, audited on the tablet with alert type 2, reason 5",
        cannot_ask && alert,
        t,
    );

    println!("-- signal back: the tablets merge with the server --");
    let t = Instant::now();
    for app in [&tablet, &ambulance] {
        app.device.start_sync().await.map_err(fail("start sync"))?;
    }
    // Both tablets push until the server holds both notes, then each pass
    // brings them in step with it: no view is needed to know (a view is
    // audited, and an emergency one raises an alert).
    let has_both = |notes: Vec<String>| {
        [VISIT, HANDOVER]
            .iter()
            .all(|n| notes.iter().any(|m| m == n))
    };
    let mut on_server = false;
    for _ in 0..10 {
        for app in [&tablet, &ambulance] {
            app.settle().await.map_err(fail("merge"))?;
        }
        on_server = has_both(site.server_notes(&nhs).map_err(fail("server copy"))?);
        if on_server {
            break;
        }
    }
    let mut settled = on_server;
    for app in [&tablet, &ambulance] {
        settled &= app.settle().await.map_err(fail("merge"))?;
    }
    // Checked before the views below, which queue events of their own.
    let uploaded = [&tablet, &ambulance].iter().all(|a| {
        a.engine()
            .and_then(|e| {
                Ok(e.audit_queue_len()
                    .map_err(scr_core::device::DeviceError::from)?)
            })
            .is_ok_and(|n| n == 0)
    });
    let nurse_has = has_both(tablet.notes(&nhs, AccessRequest::with_permission()));
    let amb_has = has_both(ambulance.notes(&nhs, AccessRequest::emergency()));
    story.check(
        "on reconnect both notes merge: each tablet shows Jo's visit and Sam's handover; every audit event is uploaded",
        settled && nurse_has && amb_has && uploaded,
        t,
    );

    let t = Instant::now();
    let phone = site
        .patient_phone("patient-phone", nhs, "tulip-2468")
        .await
        .map_err(fail("enroll phone"))?;
    phone
        .device
        .login("patient", "", "tulip-2468")
        .await
        .map_err(fail("patient login"))?;
    phone
        .device
        .start_sync()
        .await
        .map_err(fail("phone sync"))?;
    let own = phone
        .sync_until(|a| a.held(&nhs) == Compartment::ALL)
        .await
        .map_err(fail("phone sync"))?
        && phone.settle().await.map_err(fail("phone sync"))?;
    let own = own && has_both(phone.notes(&nhs, AccessRequest::with_permission()));
    story.check(
        "the patient's phone enrolls and syncs their whole record, sensitive items and both new notes included",
        own,
        t,
    );

    let t = Instant::now();
    let me = phone.engine().map_err(fail("phone engine"))?;
    me.add_entry(&nhs, sample_entry(9), false, None)
        .map_err(fail("preference"))?;
    me.set_patient_choices(&nhs, SharingChoice::CoreOnly, false)
        .map_err(fail("core only"))?;
    phone.sync_once().await.map_err(fail("phone push"))?;
    let tablet_forgot = tablet
        .sync_until(|a| a.held(&nhs) == CORE_ONLY)
        .await
        .map_err(fail("nurse sync"))?;
    let ambulance_forgot = ambulance
        .sync_until(|a| a.held(&nhs) == CORE_ONLY)
        .await
        .map_err(fail("ambulance sync"))?;
    let core_view = engine
        .view(&nhs, AccessRequest::with_permission())
        .map_err(fail("nurse view"))?;
    let preference_seen = core_view
        .view
        .compartment(Compartment::PatientEntered)
        .is_some_and(|c| !c.entries.is_empty());
    story.check(
        "the patient adds 'uses a wheelchair' and chooses core only: both tablets forget additional information and care events, and keep core and the preference",
        tablet_forgot && ambulance_forgot && preference_seen,
        t,
    );

    let t = Instant::now();
    let log = phone
        .device
        .with_sync(async |s| s.access_log(&nhs).await)
        .await
        .map_err(fail("access log"))?
        .map_err(fail("access log"))?;
    let looked = |name: &str, basis: &str| {
        log.iter().any(|e| {
            e.action == "view"
                && e.user_name.as_deref() == Some(name)
                && e.basis.as_deref() == Some(basis)
        })
    };
    story.check(
        "the patient reads who looked: Jo Nurse (RX1, with permission) and Sam Paramedic (RYA, emergency)",
        looked("Jo Nurse", "permission") && looked("Sam Paramedic", "emergency"),
        t,
    );

    let t = Instant::now();
    let officer = ambulance_privacy_officer();
    let alerts = site.alerts(&officer).map_err(fail("alerts"))?;
    let ours: Vec<_> = alerts
        .iter()
        .filter(|a| {
            a.event.patient == Some(nhs)
                && a.alert.alert_type().code() == 2
                && a.alert.reason() == AlertReason::Emergency
                && a.event.user == paramedic().id()
        })
        .collect();
    let other_trust = site
        .alerts(&community_privacy_officer())
        .map_err(fail("alerts"))?;
    for alert in &ours {
        site.close_alert(&officer, alert.id, AlertOutcome::Justified)
            .map_err(fail("close alert"))?;
    }
    let closed = site.alerts(&officer).map_err(fail("alerts"))?.is_empty();
    story.check(
        &format!(
            "RYA's privacy officer sees Sam's {} emergency-access alert(s), one per emergency view (RX1's sees none), and closes them as justified",
            ours.len()
        ),
        !ours.is_empty() && other_trust.is_empty() && closed,
        t,
    );

    let t = Instant::now();
    let mut chains = true;
    for app in [&tablet, &ambulance, &phone] {
        app.device.stop_sync().await;
        let e = app.engine().map_err(fail("engine"))?;
        chains &= matches!(e.verify_audit_chain(), Ok(Ok(())));
        e.lock().map_err(fail("lock"))?;
    }
    let flagged = site.server.metrics.audit_flagged.get();
    let locked = matches!(
        engine.view(&nhs, AccessRequest::with_permission()),
        Err(EngineError::Locked)
    );
    story.check(
        "every device's audit chain verifies, the server archived every upload unflagged, and locked tablets release nothing",
        chains && flagged == 0 && locked,
        t,
    );
    drop((tablet, ambulance, phone, engine, amb, me));
    Ok(())
}

/// True if the server's health endpoint answers 200.
async fn healthy(addr: std::net::SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    if stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut reply = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut reply),
    )
    .await;
    matches!(read, Ok(Ok(_))) && reply.starts_with(b"HTTP/1.1 200")
}

/// True if no file under `dir` holds the patient's NHS number, name, an
/// allergy's drug or a note's text in clear.
fn no_clear_text(dir: &Path, nhs: &NhsNumber) -> std::io::Result<bool> {
    let needles = [
        nhs.digits(),
        "Ada Testpatient".to_owned(),
        "Penicillin".to_owned(),
        "Leg ulcer".to_owned(),
        "glucose given".to_owned(),
    ];
    let mut pending = vec![dir.to_owned()];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
            continue;
        }
        let bytes = std::fs::read(&path)?;
        if needles
            .iter()
            .any(|n| bytes.windows(n.len()).any(|w| w == n.as_bytes()))
        {
            return Ok(false);
        }
    }
    Ok(true)
}
