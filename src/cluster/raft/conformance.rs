//! openraft's storage conformance suite run against the file-backed log store and the map state
//! machine.

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};

use super::MetaTypes;
use super::log_store::LogStore;
use super::state_machine::StateMachine;

struct FileStores;

impl StoreBuilder<MetaTypes, LogStore, StateMachine, tempfile::TempDir> for FileStores {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<MetaTypes>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = LogStore::open(dir.path()).expect("log store opens");
        let state_machine = StateMachine::open(dir.path()).expect("state machine opens");
        Ok((dir, log, state_machine))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_store_and_state_machine_pass_the_openraft_suite() {
    Suite::test_all(FileStores)
        .await
        .expect("conformance suite passes");
}
