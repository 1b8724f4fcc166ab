//! Record layout 2 (ADR 0011): permissions to view in a compartment of
//! their own, taken in governance only while the transition lasts; a
//! sharing choice names the choices its writer saw, whichever entry.

use automerge::AutoCommit;

use super::*;

fn permission(org: &str) -> EntryContent {
    EntryContent::PermissionToView {
        organisation: org.into(),
        user_id: "555000000102".into(),
        scope: PermissionScope::Organisation,
        granted: true,
    }
}

fn sharing(choice: SharingChoice) -> EntryContent {
    EntryContent::Sharing {
        choice,
        include_sensitive: false,
        hidden: false,
    }
}

/// `d` with `v` added, checked for `grants` within `limits`.
fn adding(
    compartment: Compartment,
    d: &mut Doc,
    v: &EntryVersion,
    grants: &[RoleProfileGrant],
    limits: &PushLimits,
) -> Result<usize, Refusal> {
    let mut after: AutoCommit = d.doc.fork();
    put(&mut after, &d.versions, v);
    after.commit();
    both(compartment, &mut d.doc, &mut after, grants, limits)
}

#[test]
fn permissions_have_their_own_compartment_and_governance_takes_them_only_in_the_transition() {
    let open = PushLimits::default();
    let ended = PushLimits {
        legacy_permissions_until_ms: NOW - 1,
        ..PushLimits::default()
    };
    let answer = version(permission("RX1"), by(&nurse(), NOW));
    let mut permissions = doc(Compartment::Permissions, permission("A99001"));
    for limits in [&open, &ended] {
        assert_eq!(
            adding(
                Compartment::Permissions,
                &mut permissions,
                &answer,
                &[nurse()],
                limits
            ),
            Ok(1)
        );
    }
    // An app of layout 1 records it in governance: taken until the end.
    let mut governance = doc(Compartment::Governance, sharing(SharingChoice::CoreOnly));
    assert_eq!(
        adding(
            Compartment::Governance,
            &mut governance,
            &answer,
            &[nurse()],
            &open
        ),
        Ok(1)
    );
    assert_eq!(
        adding(
            Compartment::Governance,
            &mut governance,
            &answer,
            &[nurse()],
            &ended
        ),
        Err(Refusal::WrongCompartment)
    );
    // What a device receives is not refused for it: layout 1 records keep
    // such entries for good.
    let mut after = governance.doc.fork();
    put(&mut after, &governance.versions, &answer);
    after.commit();
    assert_eq!(
        check_received(Compartment::Governance, &governance.doc, &after, &ended),
        Ok(1)
    );
    // A choice never goes to the permissions compartment.
    let choice = version(sharing(SharingChoice::OptOut), by(&phone(), NOW));
    assert_eq!(
        adding(
            Compartment::Permissions,
            &mut permissions,
            &choice,
            &[phone()],
            &open
        ),
        Err(Refusal::WrongCompartment)
    );
}

#[test]
fn a_choice_names_the_choices_its_writer_saw_whichever_entry() {
    let limits = PushLimits::default();
    // The GP feed's choice, and one the phone recorded offline in an
    // entry of its own before it had merged the GP's.
    let mut d = doc(
        Compartment::Governance,
        sharing(SharingChoice::CoreAndAdditional),
    );
    let offline = version(sharing(SharingChoice::CoreOnly), by(&phone(), NOW - HOUR));
    let legacy = version(permission("RX1"), by(&nurse(), NOW - HOUR));
    put(&mut d.doc, &d.versions, &offline);
    put(&mut d.doc, &d.versions, &legacy);
    d.doc.commit();
    let (entry, existing) = (d.existing.entry_id, d.existing.version_id);
    let superseding = |replaces: Vec<VersionId>| {
        EntryVersion::new(
            entry,
            replaces,
            VersionStatus::Current,
            sharing(SharingChoice::OptOut),
            by(&phone(), NOW),
        )
    };
    let both_seen = superseding(vec![existing, offline.version_id]);
    assert_eq!(
        adding(
            Compartment::Governance,
            &mut d,
            &both_seen,
            &[phone()],
            &limits
        ),
        Ok(1)
    );
    // Only choices: a choice does not supersede a permission to view.
    let not_a_choice = superseding(vec![existing, legacy.version_id]);
    assert_eq!(
        adding(
            Compartment::Governance,
            &mut d,
            &not_a_choice,
            &[phone()],
            &limits
        ),
        Err(Refusal::UnknownReplaces)
    );
}

#[test]
fn an_unhide_lifts_only_hiding_and_a_choice_is_the_gps_only_while_they_are() {
    let limits = PushLimits::default();
    let mut officer = staff(
        "555000000904",
        "R8003",
        "RX1",
        "po-desktop",
        RelationshipKind::Caseload,
    );
    if let GrantPrincipal::Staff {
        privacy_officer, ..
    } = &mut officer.principal
    {
        *privacy_officer = true;
    }
    // Once hidden with everything shared; the patient has since chosen
    // core only, not hidden.
    let hidden = EntryContent::Sharing {
        choice: SharingChoice::CoreAndAdditional,
        include_sensitive: true,
        hidden: true,
    };
    let mut d = doc(Compartment::Governance, hidden);
    let current = EntryVersion::new(
        d.existing.entry_id,
        vec![d.existing.version_id],
        VersionStatus::Current,
        sharing(SharingChoice::CoreOnly),
        by(&phone(), NOW - HOUR),
    );
    put(&mut d.doc, &d.versions, &current);
    d.doc.commit();
    let widened = EntryVersion::new(
        d.existing.entry_id,
        vec![d.existing.version_id, current.version_id],
        VersionStatus::Current,
        EntryContent::Sharing {
            choice: SharingChoice::CoreAndAdditional,
            include_sensitive: true,
            hidden: false,
        },
        by(&officer, NOW),
    );
    assert_eq!(
        adding(
            Compartment::Governance,
            &mut d,
            &widened,
            &[officer.clone()],
            &limits
        ),
        Err(Refusal::NotPermitted),
        "naming the patient's current choice is not an unhide"
    );

    // A GP whose registration has since ended (the newest grant has none)
    // records no choice, however it is dated.
    let mut former = gp();
    former.grant_id = "grant-gp-now".into();
    former.issued_at_ms = NOW - HOUR;
    former.relationships[0].kind = RelationshipKind::Caseload;
    let mut then = gp();
    then.expires_at_ms = NOW - HOUR;
    then.issued_at_ms = NOW - 9 * HOUR;
    let backdated = EntryVersion::new(
        d.existing.entry_id,
        vec![current.version_id],
        VersionStatus::Current,
        sharing(SharingChoice::CoreAndAdditional),
        by(&then, NOW - 2 * HOUR),
    );
    assert_eq!(
        adding(
            Compartment::Governance,
            &mut d,
            &backdated,
            &[then.clone(), former],
            &limits
        ),
        Err(Refusal::NotPermitted)
    );
    // While still the GP (the newest grant says so), the same is taken.
    assert_eq!(
        adding(
            Compartment::Governance,
            &mut d,
            &backdated,
            &[then],
            &limits
        ),
        Ok(1)
    );
}
