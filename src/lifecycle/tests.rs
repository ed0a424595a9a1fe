//! Every legal and illegal transition, drain readiness, acknowledgement and outages.

use std::time::{Duration, SystemTime};

use super::*;
use crate::pipeline::status::LoaderStage;
use ControlRequest as R;
use DaemonState as S;

const REQUESTS: [ControlRequest; 4] = [R::Pause, R::Resume, R::DrainAndStop, R::Stop];

/// The whole table: `Ok(Go(to))`, `Ok(Already)` or refused, for every state and request.
#[test]
fn every_request_in_every_state() {
    enum X {
        Go(DaemonState),
        Already,
        Refused,
    }
    use X::*;
    let table: [(DaemonState, [X; 4]); 6] = [
        //                  Pause           Resume          Drain              Stop
        (S::Starting, [Refused, Refused, Refused, Go(S::Stopping)]),
        (
            S::Running,
            [Go(S::Paused), Already, Go(S::Draining), Go(S::Stopping)],
        ),
        (
            S::Paused,
            [Already, Go(S::Running), Go(S::Draining), Go(S::Stopping)],
        ),
        (S::Draining, [Refused, Refused, Already, Go(S::Stopping)]),
        (S::Stopping, [Refused, Refused, Refused, Already]),
        (S::Failed, [Refused, Refused, Refused, Already]),
    ];
    assert_eq!(table.len(), S::ALL.len());
    for (state, row) in table {
        for (req, want) in REQUESTS.into_iter().zip(row) {
            let got = on_request(state, req);
            match want {
                Go(to) => assert_eq!(got, Ok(Decision::Go(to)), "{req:?} in {state}"),
                Already => assert_eq!(got, Ok(Decision::Already(state)), "{req:?} in {state}"),
                Refused => assert_eq!(
                    got,
                    Err(super::Refused {
                        request: req,
                        state
                    }),
                    "{req:?} in {state}"
                ),
            }
        }
    }
}

#[test]
fn refusals_say_why_and_what_to_do() {
    let msg = |state, req| on_request(state, req).unwrap_err().to_string();
    assert_eq!(
        msg(S::Draining, R::Resume),
        "cannot resume while the daemon is draining: it exits by itself once everything is loaded (stop ends it now)"
    );
    assert_eq!(
        msg(S::Failed, R::Pause),
        "cannot pause: the daemon stopped on a permanent error (see last_error); fix the cause and start it again, the spool and the slot are kept"
    );
    assert_eq!(
        msg(S::Starting, R::DrainAndStop),
        "cannot drain while the daemon is starting; try again once it is running (stop works at any time)"
    );
    assert_eq!(
        msg(S::Stopping, R::Pause),
        "cannot pause: the daemon is stopping"
    );
}

#[test]
fn events_move_the_state_only_where_they_make_sense() {
    for s in S::ALL {
        // A permanent error wins everywhere.
        assert_eq!(next(s, Event::Failed), Some(S::Failed), "{s}");
        // Startup ends only once.
        let started = next(s, Event::Started);
        assert_eq!(started, (s == S::Starting).then_some(S::Running), "{s}");
        // Drained only ends a drain.
        let drained = next(s, Event::Drained);
        assert_eq!(drained, (s == S::Draining).then_some(S::Stopping), "{s}");
        // Winding down stops everything but a failed daemon, which stays failed.
        let want = if s == S::Failed {
            None
        } else {
            Some(S::Stopping)
        };
        assert_eq!(next(s, Event::Shutdown), want, "shutdown in {s}");
        // Requests follow on_request.
        for r in REQUESTS {
            let want = match on_request(s, r) {
                Ok(Decision::Go(t) | Decision::Already(t)) => Some(t),
                Err(_) => None,
            };
            assert_eq!(next(s, Event::Request(r)), want, "{r:?} in {s}");
        }
    }
    // Failed is final: nothing but another failure leaves it.
    for e in [
        Event::Started,
        Event::Drained,
        Event::Shutdown,
        Event::Request(R::Resume),
        Event::Request(R::Stop),
    ] {
        assert!(
            matches!(next(S::Failed, e), None | Some(S::Failed)),
            "{e:?}"
        );
    }
}

#[test]
fn serving_states() {
    let serving: Vec<_> = S::ALL.into_iter().filter(|s| s.is_serving()).collect();
    assert_eq!(
        serving,
        [S::Starting, S::Running, S::Paused, S::Draining],
        "stopping and failed are not serving"
    );
}

#[test]
fn controls_per_state() {
    let c = |reader_paused, loader_paused| Controls {
        reader_paused,
        loader_paused,
    };
    assert_eq!(controls(S::Running), c(false, false));
    assert_eq!(controls(S::Paused), c(true, true));
    assert_eq!(controls(S::Starting), c(true, true));
    // Draining: reading stops, the loader never pauses (it would abandon a load).
    assert_eq!(controls(S::Draining), c(true, false));
}

fn quiet() -> DrainView {
    DrainView {
        connected: true,
        held_back: true,
        pending_batch: false,
        handed_over: Lsn(400),
        durable: Lsn(400),
        writer_queue_empty: true,
    }
}

#[test]
fn drain_is_ready_only_when_nothing_read_is_on_its_way() {
    assert!(drain_ready(&quiet()));
    // The bug of issue 9 case 7: a batch held back because the writer's channel is full is
    // not in `handed_over` yet; durable >= handed_over alone said "ready".
    let held = DrainView {
        pending_batch: true,
        ..quiet()
    };
    assert!(held.durable >= held.handed_over && held.held_back);
    assert!(
        !drain_ready(&held),
        "a pending batch would be left unloaded"
    );
    assert!(!drain_ready(&DrainView {
        held_back: false,
        ..quiet()
    }));
    assert!(!drain_ready(&DrainView {
        durable: Lsn(399),
        ..quiet()
    }));
    assert!(!drain_ready(&DrainView {
        writer_queue_empty: false,
        ..quiet()
    }));
    // Disconnected: reading has stopped whatever `held_back` last said.
    assert!(drain_ready(&DrainView {
        connected: false,
        held_back: false,
        ..quiet()
    }));
    assert!(drain_ready(&DrainView {
        durable: Lsn(401),
        ..quiet()
    }));
}

#[test]
fn drain_phases_advance_in_order() {
    // Settling waits for readiness, then loading stays loading.
    let held = DrainView {
        pending_batch: true,
        ..quiet()
    };
    assert_eq!(advance(DrainPhase::Settling, &held), DrainPhase::Settling);
    let reading = DrainView {
        held_back: false,
        ..quiet()
    };
    assert_eq!(
        advance(DrainPhase::Settling, &reading),
        DrainPhase::Settling
    );
    assert_eq!(advance(DrainPhase::Settling, &quiet()), DrainPhase::Loading);
    assert_eq!(advance(DrainPhase::Loading, &held), DrainPhase::Loading);
    assert_eq!(
        DrainPhase::Settling.describe(),
        "draining: reading stopped, making what was read durable"
    );
}

#[test]
fn both_ack_policies() {
    assert_eq!(acknowledged(AckPolicy::Loaded, Lsn(10), Lsn(50)), Lsn(10));
    assert_eq!(acknowledged(AckPolicy::Spooled, Lsn(10), Lsn(50)), Lsn(50));
    // The loaded mark can pass the durable one only in a race of the watches: the higher.
    assert_eq!(acknowledged(AckPolicy::Spooled, Lsn(60), Lsn(50)), Lsn(60));
    let mut cur = Lsn(20);
    assert!(!advance_ack(&mut cur, Lsn(10)), "never backwards");
    assert_eq!(cur, Lsn(20));
    assert!(!advance_ack(&mut cur, Lsn(20)));
    assert!(advance_ack(&mut cur, Lsn(30)));
    assert_eq!(cur, Lsn(30));
}

#[test]
fn daemon_outages_count_attempts_until_reached() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
    let mut o = Outages::default();
    assert!(o.get(Dependency::Postgres).is_none());
    o.failed(Dependency::Postgres, t0, "connection refused".into());
    let got = o.failed(
        Dependency::Postgres,
        t0 + Duration::from_secs(5),
        "the database system is starting up".into(),
    );
    assert_eq!(
        got,
        Outage {
            since: t0,
            attempts: 2,
            last_error: "the database system is starting up".into()
        }
    );
    assert!(o.get(Dependency::StarRocks).is_none());
    assert_eq!(o.reached(Dependency::Postgres).map(|x| x.attempts), Some(2));
    assert!(o.get(Dependency::Postgres).is_none());
    assert_eq!(o.reached(Dependency::Postgres), None);
}

#[test]
fn reader_reconnects_are_a_postgres_outage() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(7);
    let mut o = Outages::default();
    let mut r = ReaderStatus::default();
    // Not connected yet, no error: nothing to report.
    assert!(!o.observe_reader(&r, t0));
    r.connected = true;
    r.reconnects = 3;
    assert!(!o.observe_reader(&r, t0));
    r.connected = false;
    r.last_error = Some("connection to PostgreSQL lost: eof".into());
    assert!(o.observe_reader(&r, t0));
    r.reconnects = 5;
    r.last_error = Some("cannot connect".into());
    assert!(o.observe_reader(&r, t0 + Duration::from_secs(9)));
    let got = o.get(Dependency::Postgres).unwrap();
    assert_eq!((got.since, got.attempts), (t0, 3));
    assert_eq!(got.last_error, "cannot connect");
    assert!(
        !o.observe_reader(&r, t0 + Duration::from_secs(10)),
        "no change"
    );
    r.connected = true;
    assert!(o.observe_reader(&r, t0));
    assert!(o.get(Dependency::Postgres).is_none());
}

#[test]
fn loader_retries_are_a_starrocks_outage_and_startup_ones_are_kept() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(3);
    let mut o = Outages::default();
    let mut l = LoaderStatus {
        stage: LoaderStage::Idle,
        retries: 4,
        ..LoaderStatus::default()
    };
    assert!(!o.observe_loader(&l, t0));
    l.stage = LoaderStage::Retrying;
    l.retries = 5;
    l.last_error = Some("items: connection refused".into());
    assert!(o.observe_loader(&l, t0));
    assert_eq!(o.get(Dependency::StarRocks).unwrap().attempts, 1);
    l.retries = 8;
    assert!(o.observe_loader(&l, t0));
    assert_eq!(o.get(Dependency::StarRocks).unwrap().attempts, 4);
    // Paused in the middle of a retry: still unreachable as far as anyone knows.
    l.stage = LoaderStage::Paused;
    assert!(!o.observe_loader(&l, t0));
    assert!(o.get(Dependency::StarRocks).is_some());
    // A retry went through.
    l.stage = LoaderStage::Loading;
    l.last_error = None;
    assert!(o.observe_loader(&l, t0));
    assert!(o.get(Dependency::StarRocks).is_none());

    // An outage found by the daemon's startup check is not ended by an idle loader.
    o.failed(Dependency::StarRocks, t0, "connect timeout".into());
    l.stage = LoaderStage::Idle;
    assert!(!o.observe_loader(&l, t0));
    assert!(o.get(Dependency::StarRocks).is_some());
    // The loader's own retries keep it up to date; only the daemon ends it.
    l.stage = LoaderStage::Retrying;
    l.last_error = Some("items: refused".into());
    assert!(o.observe_loader(&l, t0));
    assert_eq!(
        o.get(Dependency::StarRocks).unwrap().last_error,
        "items: refused"
    );
    assert!(o.reached(Dependency::StarRocks).is_some());
}

#[test]
fn readiness_needs_running_starrocks_and_a_connected_reader() {
    let mut s = LifecycleStatus {
        state: S::Running,
        ..LifecycleStatus::default()
    };
    assert_eq!(s.readiness(true), Ok(()));
    assert_eq!(
        s.readiness(false),
        Err("not ready: the reader is not connected to PostgreSQL".into())
    );
    s.outages.failed(
        Dependency::StarRocks,
        SystemTime::UNIX_EPOCH,
        "connection refused".into(),
    );
    assert_eq!(
        s.readiness(true),
        Err("not ready: StarRocks is unreachable, retrying (failed attempts: 1): connection refused".into())
    );
    s.state = S::Starting;
    assert_eq!(s.readiness(true), Err("not ready: starting".into()));
}
