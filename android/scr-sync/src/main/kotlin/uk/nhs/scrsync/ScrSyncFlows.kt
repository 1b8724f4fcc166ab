// A thin idiomatic layer over the generated bindings: observers as Flows.
// Hand-written (not generated); compiled with them by the JVM tests.
package uk.nhs.scrsync

import kotlinx.coroutines.channels.awaitClose
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.callbackFlow

/**
 * Starts background sync (if it is not running) and emits every change of
 * its state until sync stops. Collecting twice attaches two observers.
 */
fun ScrDevice.syncStatuses(): Flow<SyncStatus> = callbackFlow {
    startSync(object : SyncObserver {
        override fun onStatus(status: SyncStatus) {
            trySend(status)
        }
    })
    awaitClose { }
}

/**
 * Emits the NHS number each time the patient's record changes on this
 * device (merged from sync, written here, forgotten). Read the record again
 * with [ScrDevice.view], which is audited. Cancelling the collection stops
 * the observer.
 */
fun ScrDevice.recordChanges(nhsNumber: String): Flow<String> = callbackFlow {
    val handle = observeRecord(nhsNumber, object : RecordObserver {
        override fun onRecordChanged(nhsNumber: String) {
            trySend(nhsNumber)
        }
    })
    awaitClose { handle.close() }
}

/**
 * Emits every held record's sync status (changes the server has not
 * confirmed; when it last confirmed the record) now, then each time one
 * changes: what a nurse checks before leaving a visit. Cancelling the
 * collection stops the observer.
 */
fun ScrDevice.recordSyncUpdates(): Flow<List<RecordSyncState>> = callbackFlow {
    val handle = observeRecordSync(object : RecordSyncObserver {
        override fun onRecordSync(states: List<RecordSyncState>) {
            trySend(states)
        }
    })
    awaitClose { handle.close() }
}
