//! Which device was told which documents are in step, so that a later
//! write to one of them reaches it: a document the catalogue found in step
//! is not joined in samod for the device's session, so samod would not
//! forward its changes. Each such write bumps the device's holdings notice
//! (which the device syncs through samod), and its next pass asks the
//! catalogue again. One bump per answer: a notified device is forgotten
//! here until it asks again.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

type Device = [u8; 32];

#[derive(Default)]
pub struct Watchers {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_doc: HashMap<String, HashSet<Device>>,
    /// Each device's watched documents, and the session that asked.
    by_device: HashMap<Device, (u64, HashSet<String>)>,
    /// The newest session each device asked on: a late answer on an older
    /// one (ended meanwhile) must not replace what the newer was told.
    newest: HashMap<Device, u64>,
}

impl Inner {
    /// Whether `session` is the device's newest (and makes it so).
    fn current(&mut self, device: Device, session: u64) -> bool {
        let newest = self.newest.entry(device).or_insert(session);
        if session < *newest {
            return false;
        }
        *newest = session;
        true
    }

    fn forget(&mut self, device: &Device) {
        for doc in self.by_device.remove(device).unwrap_or_default().1 {
            if let Some(devices) = self.by_doc.get_mut(&doc) {
                devices.remove(device);
                if devices.is_empty() {
                    self.by_doc.remove(&doc);
                }
            }
        }
    }
}

impl Watchers {
    /// The device was told these documents are in step on its session
    /// numbered `session` (replacing what it was told before).
    pub fn watch(&self, device: Device, session: u64, docs: Vec<String>) {
        if let Ok(mut inner) = self.inner.lock()
            && inner.current(device, session)
        {
            inner.forget(&device);
            for doc in &docs {
                inner.by_doc.entry(doc.clone()).or_default().insert(device);
            }
            inner
                .by_device
                .insert(device, (session, docs.into_iter().collect()));
        }
    }

    /// Adds to what the device's session was told (a fetch's documents).
    pub fn add(&self, device: Device, session: u64, docs: Vec<String>) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if !inner.current(device, session) {
            return;
        }
        if inner
            .by_device
            .get(&device)
            .is_some_and(|(s, _)| *s != session)
        {
            inner.forget(&device);
        }
        for doc in &docs {
            inner.by_doc.entry(doc.clone()).or_default().insert(device);
        }
        let entry = inner
            .by_device
            .entry(device)
            .or_insert_with(|| (session, HashSet::new()));
        entry.1.extend(docs);
    }

    /// The device's samod syncs the document on its session now: samod
    /// carries its changes from here, so no notice is owed for it (and its
    /// own push does not come back as one).
    pub fn joined(&self, device: &Device, doc: &str) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let watched = inner
            .by_device
            .get_mut(device)
            .is_some_and(|(_, docs)| docs.remove(doc));
        if watched && let Some(devices) = inner.by_doc.get_mut(doc) {
            devices.remove(device);
            if devices.is_empty() {
                inner.by_doc.remove(doc);
            }
        }
    }

    /// The device's session numbered `session` ended (a newer session's
    /// watch stays).
    pub fn forget(&self, device: &Device, session: u64) {
        if let Ok(mut inner) = self.inner.lock()
            && inner
                .by_device
                .get(device)
                .is_some_and(|(s, _)| *s == session)
        {
            inner.forget(device);
        }
    }

    /// The document was written: the devices to notify (each forgotten).
    pub fn written(&self, doc: &str) -> Vec<Device> {
        let Ok(mut inner) = self.inner.lock() else {
            return Vec::new();
        };
        let devices: Vec<Device> = inner
            .by_doc
            .get(doc)
            .map(|d| d.iter().copied().collect())
            .unwrap_or_default();
        for d in &devices {
            inner.forget(d);
        }
        devices
    }

    /// Every document some device watches.
    pub fn documents(&self) -> Vec<String> {
        self.inner
            .lock()
            .map(|i| i.by_doc.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Every watching device (each forgotten): after another process wrote.
    pub fn all(&self) -> Vec<Device> {
        let Ok(mut inner) = self.inner.lock() else {
            return Vec::new();
        };
        inner.by_doc.clear();
        inner.by_device.drain().map(|(d, _)| d).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_notifies_each_watcher_once_and_a_new_answer_replaces_the_old() {
        let w = Watchers::default();
        w.watch([1; 32], 1, vec!["a".into(), "b".into()]);
        w.watch([2; 32], 2, vec!["b".into()]);
        // Device 1 asked again: "a" is no longer in step for it.
        w.watch([1; 32], 1, vec!["b".into()]);
        assert!(w.written("a").is_empty());
        let mut told = w.written("b");
        told.sort();
        assert_eq!(told, vec![[1; 32], [2; 32]]);
        assert!(w.written("b").is_empty(), "told once until it asks again");
        w.watch([3; 32], 3, vec!["c".into()]);
        w.forget(&[3; 32], 3);
        assert!(w.written("c").is_empty());
        // An old session ending leaves the new session's watch.
        w.watch([5; 32], 6, vec!["e".into()]);
        w.forget(&[5; 32], 5);
        assert_eq!(w.written("e"), vec![[5; 32]]);
        // A document the device then syncs through samod owes no notice.
        w.watch([8; 32], 9, vec!["h".into(), "i".into()]);
        w.joined(&[8; 32], "h");
        assert!(w.written("h").is_empty());
        assert_eq!(w.written("i"), vec![[8; 32]]);
        // A fetch adds to what its session was told.
        w.watch([6; 32], 7, vec!["f".into()]);
        w.add([6; 32], 7, vec!["g".into()]);
        assert_eq!(w.written("g"), vec![[6; 32]]);
        assert!(w.written("f").is_empty(), "forgotten whole once told");
        // A late answer on an older session changes nothing.
        w.watch([9; 32], 12, vec!["new".into()]);
        w.watch([9; 32], 11, vec!["old".into()]);
        w.add([9; 32], 11, vec!["older".into()]);
        assert!(w.written("old").is_empty() && w.written("older").is_empty());
        assert_eq!(w.written("new"), vec![[9; 32]]);
        w.watch([4; 32], 4, vec!["d".into()]);
        assert_eq!(w.all(), vec![[4; 32]]);
        assert!(w.written("d").is_empty());
    }
}
