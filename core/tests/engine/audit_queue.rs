//! The audit queue: released only as acknowledged, and surviving a restart.

use scr_core::access::AccessRequest;
use scr_core::grant::RelationshipKind;
use scr_core::retention::DeviceClass;
use scr_core::store::HoldReason;

use crate::support::{World, nurse};

#[test]
fn the_audit_queue_releases_only_what_was_acknowledged_and_survives_restart() {
    let w = World::new();
    let (nhs, exports) = w.patient(13);
    let path = w.dir.path().join("nurse-6.db");
    {
        let tablet = w.engine_at(&path, "nurse-6", DeviceClass::NurseTablet);
        tablet
            .receive_patient(&nhs, &exports, HoldReason::Caseload)
            .unwrap();
        tablet
            .login_online(
                &w.grant("nurse-6", nurse(), &[(nhs, RelationshipKind::Caseload)]),
                "1357",
            )
            .unwrap();
        tablet.record_permission(&nhs, true, true).unwrap();
        for _ in 0..5 {
            tablet.view(&nhs, AccessRequest::with_permission()).unwrap();
        }
    }
    let tablet = w.engine_at(&path, "nurse-6", DeviceClass::NurseTablet);
    let events = tablet.audit_queue().unwrap();
    assert_eq!(events.len(), 8);
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=8).collect::<Vec<_>>()
    );
    assert_eq!(tablet.acknowledge_audit(3).unwrap(), 3);
    assert_eq!(tablet.verify_audit_chain().unwrap(), Ok(()));
    tablet.unlock("1357").unwrap();
    let next = tablet.view(&nhs, AccessRequest::with_permission()).unwrap();
    assert_eq!(
        next.audit.seq, 10,
        "an unlock (9) and this view (10): the counter never restarts"
    );
    assert_eq!(tablet.audit_queue().unwrap().first().unwrap().seq, 4);
}
