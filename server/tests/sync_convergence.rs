//! Property, through the server and the whole sync path (catalogue, fetch,
//! samod): three tablets (two of one nurse, the paramedic's) write visit
//! notes to the same patients while going offline, coming back and
//! restarting (the engine reopened from its files) in a random order. Once
//! all are back, every tablet shows every note written, none lost, none
//! made up. Seeded: a failing case names its seed.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use scr_core::NhsNumber;
use scr_core::access::AccessRequest;
use scr_core::record::SharingChoice;
use scr_core::retention::DeviceClass;

mod common;
use common::device::{Device, visit};
use common::fault_proxy::Rng;
use common::site::{on_caseload, on_incident, site};

const CASES: u64 = 3;
const STEPS: usize = 16;
const PATIENTS: u32 = 2;

fn access(d: usize) -> AccessRequest {
    if d == 2 {
        AccessRequest::emergency()
    } else {
        AccessRequest::with_permission()
    }
}

/// The notes this case wrote that `device` shows for `nhs`.
fn written_notes(device: &Device, d: usize, nhs: &NhsNumber) -> BTreeSet<String> {
    device
        .notes(nhs, access(d))
        .into_iter()
        .filter(|n| n.starts_with("case "))
        .collect()
}

async fn one_case(seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let s = site(dir.path()).await;
    let patients: Vec<NhsNumber> = (1..=PATIENTS)
        .map(|n| {
            on_caseload(&s.srv, &s.store, n, SharingChoice::CoreAndAdditional);
            on_incident(
                &s.srv,
                &s.store,
                n,
                SharingChoice::CoreAndAdditional,
                "INC-40",
            )
        })
        .collect();
    let mut devices = vec![
        Device::nurse(&s.srv, dir.path()).await,
        Device::enroll(
            &s.srv,
            dir.path(),
            "nurse-second-tablet",
            ("RX1", DeviceClass::NurseTablet),
            common::nurse_login(),
        )
        .await,
        Device::paramedic(&s.srv, dir.path()).await,
    ];
    for (d, device) in devices.iter_mut().enumerate() {
        device.online().await;
        device.settle().await;
        if d < 2 {
            for p in &patients {
                device.engine.record_permission(p, true, true).unwrap();
            }
            device.settle().await;
        }
    }

    let mut rng = Rng::new(seed);
    let mut online = [true; 3];
    let mut expected: Vec<BTreeSet<String>> = vec![BTreeSet::new(); patients.len()];
    for step in 0..STEPS {
        let d = rng.below(3) as usize;
        match rng.below(100) {
            0..50 => {
                let p = rng.below(u64::from(PATIENTS)) as usize;
                let note = format!("case {seed} step {step} tablet {d}");
                devices[d]
                    .engine
                    .add_entry(&patients[p], visit(&note), false, None)
                    .unwrap();
                expected[p].insert(note);
            }
            50..65 if online[d] => {
                devices[d].offline().await;
                online[d] = false;
            }
            50..80 if !online[d] => {
                devices[d].online().await;
                online[d] = true;
            }
            _ => {
                devices[d].restart().await;
                online[d] = rng.chance(50);
                if online[d] {
                    devices[d].online().await;
                }
            }
        }
        // Let some of it travel before the next step.
        tokio::time::sleep(Duration::from_millis(rng.below(150))).await;
    }

    for (d, device) in devices.iter_mut().enumerate() {
        if !online[d] {
            device.online().await;
        }
    }
    // Everyone back: passes until every tablet shows every note (bounded;
    // a lost note never arrives and fails the case).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        for device in &devices {
            device.settle().await;
        }
        let mut all = true;
        for (d, device) in devices.iter().enumerate() {
            for (p, nhs) in patients.iter().enumerate() {
                let shown = written_notes(device, d, nhs);
                assert!(
                    shown.is_subset(&expected[p]),
                    "seed {seed}: tablet {d} shows a note nobody wrote: {:?}",
                    shown.difference(&expected[p]).collect::<Vec<_>>()
                );
                all &= shown == expected[p];
            }
        }
        if all {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "seed {seed}: the tablets did not converge on every note written"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for device in &mut devices {
        device.offline().await;
    }
    s.srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_tablets_editing_offline_and_restarting_converge_with_nothing_lost() {
    for case in 0..CASES {
        one_case(0x5C5_0000 + case).await;
    }
}
