//! Standards over time: a scorecard's level distribution, overall and per team, at the end of each of the
//! last days, read from the change log (exact: the catalog as it was, judged by the scorecard as it is now).
//!
//! The log is replayed from the start ([`crate::replay::at_each`]) and the catalog is judged each time the
//! replay passes a day's end; what the caller may read is decided by its read permissions today, applied
//! to the entities as they were. The whole log is read once per request, at most
//! [`crate::replay::MAX_EVENTS`] events, one replay at a time in the process.

use std::collections::BTreeMap;

use berth_engine::State;
use berth_engine::access::Principal;
use berth_engine::scoped::Scoped;
use berth_engine::search::Judging;
use berth_model::Timestamp;
use berth_model::scorecard::Scorecard;

use crate::Pipeline;
use crate::replay::ReplayError;

/// The most days one request covers.
pub const MAX_DAYS: u32 = 90;
const DAY_MS: i64 = 86_400_000;

/// The distribution at the end of one day (today: now).
#[derive(Debug, Clone, PartialEq)]
pub struct Day {
    /// `YYYY-MM-DD` (UTC).
    pub date: String,
    /// The time judged: the day's end, or now for today.
    pub at: String,
    /// Level title → entities at that level (every level, zeros included).
    pub levels: BTreeMap<String, usize>,
    /// Team → level title → entities of that team at that level (only teams with entities judged).
    pub teams: BTreeMap<String, BTreeMap<String, usize>>,
}

/// The distribution of `card` over the readable entities of its blueprint at the end of each of the last
/// `days` days (1 to [`MAX_DAYS`]; the last one is today, judged at `now`), oldest first.
pub async fn level_history(
    pipeline: &Pipeline,
    principal: Principal,
    card: Scorecard,
    days: u32,
    now: Timestamp,
) -> Result<Vec<Day>, ReplayError> {
    let days = days.clamp(1, MAX_DAYS) as i64;
    let today = now.millis().div_euclid(DAY_MS) * DAY_MS;
    // The instants judged: each past day's last millisecond, then now.
    let mut ends: Vec<Timestamp> =
        (1..days).rev().map(|back| Timestamp::from_millis(today - (back - 1) * DAY_MS - 1)).collect();
    ends.push(now);
    // Who may read what is decided by today's permissions, applied to each entity as it was.
    let current = pipeline.view();
    let at = ends.clone();
    crate::replay::at_each(pipeline, ends, move |state: &State, i| {
        let reader = Scoped::new(&current, principal.clone(), now);
        judge(state, &reader, &card, at[i])
    })
    .await
}

/// The distribution of `card` over the entities of `state` (the catalog at `at`) that `reader` (the caller's
/// view of today's catalog) may read.
fn judge(state: &State, reader: &Scoped<'_>, card: &Scorecard, at: Timestamp) -> Day {
    let titles: Vec<String> = card.levels.iter().map(|l| l.title.clone()).collect();
    let zero = || titles.iter().map(|t| (t.clone(), 0usize)).collect::<BTreeMap<String, usize>>();
    let mut day = Day {
        date: at.to_rfc3339().chars().take(10).collect(),
        at: at.to_rfc3339(),
        levels: zero(),
        teams: BTreeMap::new(),
    };
    let Some(judging) = Judging::new(state, at, card.clone()) else { return day };
    for e in state.entities_of(&card.blueprint).filter(|e| reader.can_read(e)) {
        let Some(level) = judging.level(e) else { continue };
        if let Some(n) = day.levels.get_mut(level) {
            *n += 1;
        }
        for team in &e.team {
            if let Some(n) = day.teams.entry(team.clone()).or_insert_with(zero).get_mut(level) {
                *n += 1;
            }
        }
    }
    day
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use berth_engine::access::Principal;
    use berth_engine::{Command, WriteMeta};
    use berth_model::Timestamp;
    use berth_store::LogStore;
    use serde_json::json;

    use crate::Pipeline;
    use crate::testing::{Failures, TestStore, meta};

    const DAY: i64 = super::DAY_MS;

    fn at(ms: i64) -> WriteMeta {
        WriteMeta { now: Timestamp::from_millis(ms), ..meta() }
    }

    fn team(id: &str, n: i64, teams: &[&str]) -> Command {
        let body = json!({"identifier": id, "team": teams, "properties": {"n": n}});
        Command::WriteEntity {
            blueprint: "s".into(),
            path_id: None,
            input: berth_model::EntityInput::from_value(&body).expect("input"),
            mode: berth_engine::WriteMode::Upsert,
            create_missing_related: false,
        }
    }

    /// The distribution on each past day is the catalog as it was that day, judged by today's scorecard;
    /// today's is the current catalog; per team too; and a Member sees only what it may read.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_day_judges_the_catalog_as_it_was_then() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(TestStore::new(&dir.path().join("log.db"), Failures::None));
        let pipeline = Pipeline::open(store as Arc<dyn LogStore>, 0).await.expect("pipeline");
        let now = crate::now().millis();
        let today = now.div_euclid(DAY) * DAY;
        let bp = json!({"identifier": "s", "title": "S", "schema": {"properties": {"n": {"type": "number"}}}});
        pipeline.write_one(at(today - 5 * DAY), Command::CreateBlueprint { body: bp }).await.expect("w").0.expect("bp");
        // Three days ago: a at 1, b at 5. Yesterday: a reaches 5. Today: c appears at 0.
        pipeline.write_one(at(today - 3 * DAY + 10), team("a", 1, &["core"])).await.expect("w").0.expect("a");
        pipeline.write_one(at(today - 3 * DAY + 20), team("b", 5, &["web"])).await.expect("w").0.expect("b");
        pipeline.write_one(at(today - DAY + 10), team("a", 5, &["core"])).await.expect("w").0.expect("a2");
        pipeline.write_one(at(now), team("c", 0, &[])).await.expect("w").0.expect("c");
        let card = json!({"title": "Card", "rules": [
            {"identifier": "one", "title": "one", "level": "Bronze", "query": {"combinator": "and", "conditions": [
                {"property": "n", "operator": ">=", "value": 1}]}},
            {"identifier": "five", "title": "five", "level": "Gold", "query": {"combinator": "and", "conditions": [
                {"property": "n", "operator": ">=", "value": 5}]}}]});
        let card = berth_model::scorecard::Scorecard::parse("s", "card", &card).expect("card").0;
        let admin = Principal { id: "root".into(), roles: vec!["Admin".into()], teams: vec![] };
        let days = super::level_history(&pipeline, admin, card.clone(), 5, Timestamp::from_millis(now))
            .await
            .expect("history");
        let counts = |d: &super::Day| -> Vec<usize> {
            ["Basic", "Bronze", "Silver", "Gold"].iter().map(|l| d.levels[*l]).collect()
        };
        let all: Vec<Vec<usize>> = days.iter().map(counts).collect();
        // 4 and 5 days ago: nothing; 3 and 2 days ago: a Silver (Silver has no rules: passing Bronze's
        // reaches it), b Gold; yesterday: both Gold; today: c Basic too.
        assert_eq!(all, vec![vec![0, 0, 0, 0], vec![0, 0, 1, 1], vec![0, 0, 1, 1], vec![0, 0, 0, 2], vec![1, 0, 0, 2]]);
        assert_eq!(days[1].teams["core"]["Silver"], 1);
        assert_eq!(days[4].teams["core"]["Gold"], 1);
        assert_eq!(days.last().map(|d| d.date.len()), Some(10));
        // A Member that may read nothing of `s` (read permission for Admins only) counts nothing.
        let patch = json!({"entities": {"read": {"roles": ["Admin"], "users": [], "teams": []}}});
        let permissions =
            Box::new(berth_model::BlueprintPermissions::defaults("s").patched(&patch).expect("permissions"));
        let r = pipeline.write_one(meta(), Command::SetPermissions { blueprint: "s".into(), permissions }).await;
        r.expect("w").0.expect("permissions");
        let member = Principal { id: "m".into(), roles: vec!["Member".into()], teams: vec!["core".into()] };
        let days =
            super::level_history(&pipeline, member, card, 5, Timestamp::from_millis(now)).await.expect("history");
        assert!(days.iter().all(|d| d.levels.values().all(|n| *n == 0)), "{days:?}");
    }
}
