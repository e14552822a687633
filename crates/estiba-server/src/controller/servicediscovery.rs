//! Cloud Map housekeeping: forgets the records of operations older than
//! `estiba_core::servicediscovery::OPERATION_RETENTION` (every namespace, service and
//! instance change leaves one), in every account and region. Runs every `every`, first that
//! long after the start.

use std::time::Duration;

use estiba_api::servicediscovery::OperationShape;
use estiba_core::servicediscovery as sd;
use estiba_store::{Op, Txn};

use super::{Controller, Wake};
use crate::services::servicediscovery::{table, Table};
use crate::{now, Server, WriteError};

pub struct CloudMapHousekeeping {
    pub every: Duration,
}

impl Controller for CloudMapHousekeeping {
    type Error = WriteError;

    fn name(&self) -> &'static str {
        "cloudmap-housekeeping"
    }

    fn first(&self) -> Wake {
        Wake::after(self.every)
    }

    fn after_error(&self) -> Wake {
        Wake::after(self.every)
    }

    async fn pass(&self, server: &Server) -> Result<Wake, WriteError> {
        let now = now();
        let expired: Vec<String> = {
            let st = server.view.read();
            st.docs::<OperationShape>(table(Table::Operations), sd::PREFIX)
                .filter(|d| sd::operation_expired(&d.value, now))
                .map(|d| d.key.clone())
                .collect()
        };
        // Operations never change once written: plain deletes cannot undo anything, and each
        // is independent: as many per transaction as the background budget allows.
        let groups = expired.iter().map(|k| Txn::new().then(Op::delete(k)));
        for (txn, _) in estiba_store::pack(server.txn_budget(), groups) {
            server.commit(txn).await?;
        }
        Ok(Wake::after(self.every))
    }
}
