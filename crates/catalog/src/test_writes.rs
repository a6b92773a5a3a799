//! Writes for the unit tests of the indexes derived from the catalog (the deployments index, the Backstage
//! index): a command executed and applied to a hand-built state, each at its own millisecond.

use berth_engine::{Command, State, WriteMeta, WriteMode};
use berth_model::{EntityInput, Origin, Timestamp};
use serde_json::Value;

/// Executes and applies `cmd` as the `n`-th write (`n` is moved on).
pub fn apply(state: &mut State, n: &mut i64, cmd: Command) {
    *n += 1;
    let meta = WriteMeta {
        actor: "t".into(),
        origin: Origin::Api,
        now: Timestamp::from_millis(1_700_000_000_000 + *n),
        datasource: None,
        run_id: None,
        principal: None,
    };
    berth_engine::execute_and_apply(state, &meta, &cmd).expect("written");
}

/// An upsert of the entity `body` into `bp` (related entities made when missing, if asked).
pub fn upsert(bp: &str, body: Value, create_missing_related: bool) -> Command {
    Command::WriteEntity {
        blueprint: bp.into(),
        path_id: None,
        input: EntityInput::from_value(&body).expect("input"),
        mode: WriteMode::Upsert,
        create_missing_related,
    }
}
