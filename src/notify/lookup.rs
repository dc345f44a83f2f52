//! The lookups of webhook hosts at submit ([`super::target::check_url`]): the system's resolver
//! on a blocking thread, at most [`LOOKUPS_AT_ONCE`] at once, each submit waiting
//! [`RESOLVE_TIMEOUT`] at most; answers kept [`CACHE_FOR`]. The resolver is given to
//! [`Lookups::new`], so tests can use one that never answers or answers late.

use std::collections::HashMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Semaphore};

use super::target::Refused;

/// How long a name may take to resolve at submit.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// At most this many names resolved at once at submit. Each lookup is a blocking thread until
/// the system's resolver answers, whatever the submit's timeout: submits naming hosts whose DNS
/// never answers took the blocking pool (512 threads), which the embedded store's reads share,
/// and slowed every client (probe s53c).
const LOOKUPS_AT_ONCE: usize = 16;

/// How long a name's answer (its addresses, or that it does not exist) is kept for the checks at
/// submit: a batch of 1,000 items naming one host resolved it 1,000 times, one after another,
/// and took past the request timeout with a resolver of 50 ms (probe s53c). Deliveries resolve
/// afresh ([`super::target::CheckedResolver`]). At most [`CACHE_NAMES`] names are kept.
const CACHE_FOR: Duration = Duration::from_secs(10);
const CACHE_NAMES: usize = 1024;

/// A name in lower case, and a port.
type Key = (String, u16);
/// What a lookup learnt: the name's addresses, or why it is refused.
pub type Answer = Result<Vec<IpAddr>, Refused>;
/// A blocking lookup of `host:port`'s addresses: the system's resolver, or a test's.
pub type Resolver = Arc<dyn Fn(&str, u16) -> std::io::Result<Vec<IpAddr>> + Send + Sync>;

/// The lookups at submit of one process: the system's resolver.
static AT_SUBMIT: LazyLock<Arc<Lookups>> =
    LazyLock::new(|| Lookups::new(Arc::new(system), LOOKUPS_AT_ONCE, RESOLVE_TIMEOUT));

/// `host:port`'s addresses, as [`Lookups::resolve`] with the system's resolver.
pub async fn resolve(host: &str, port: u16) -> Answer {
    AT_SUBMIT.resolve(host, port).await
}

/// The system's resolver.
fn system(host: &str, port: u16) -> std::io::Result<Vec<IpAddr>> {
    #[cfg(test)]
    tests::looked_up(host, port);
    (host, port)
        .to_socket_addrs()
        .map(|it| it.map(|a| a.ip()).collect())
}

/// The resolver's answer for `host`, as a check at submit takes it.
fn answer_of(host: &str, found: std::io::Result<Vec<IpAddr>>) -> Answer {
    found.map_err(|e| {
        let said = format!("`{host}` cannot be resolved: {e}");
        // The resolver's "temporary failure" (EAI_AGAIN): not an answer about the name.
        if e.to_string()
            .to_ascii_lowercase()
            .contains("temporary failure")
        {
            Refused::Unresolved(said)
        } else {
            Refused::Target(said)
        }
    })
}

/// Lookups of names at submit through one resolver: its slots, its answers kept, the lookups
/// under way (one a name, shared by every submit naming it).
pub struct Lookups {
    resolver: Resolver,
    slots: Arc<Semaphore>,
    /// How many slots there are.
    at_once: usize,
    budget: Duration,
    /// The answers kept: by (name in lower case, port), when each came.
    answers: parking_lot::Mutex<HashMap<Key, (Instant, Answer)>>,
    /// The lookups under way: their answer, once they have one.
    under_way: parking_lot::Mutex<HashMap<Key, watch::Receiver<Option<Answer>>>>,
    /// Until when every slot is taken, as a lookup found that waited the whole budget for one:
    /// a lookup meanwhile takes a slot only if one is free at once.
    full_until: parking_lot::Mutex<Option<tokio::time::Instant>>,
}

impl Lookups {
    /// Lookups through `resolver`, `slots` at once, each submit waiting `budget` at most.
    pub fn new(resolver: Resolver, slots: usize, budget: Duration) -> Arc<Self> {
        Arc::new(Self {
            resolver,
            slots: Arc::new(Semaphore::new(slots)),
            at_once: slots,
            budget,
            answers: Default::default(),
            under_way: Default::default(),
            full_until: Default::default(),
        })
    }

    /// `host:port`'s addresses, from the answers kept ([`CACHE_FOR`]), the lookup of it under
    /// way, or a new lookup, within the budget in all.
    ///
    /// Every submit naming a name shares its one lookup, and a lookup that did not answer within
    /// the budget (or answered "temporary failure") is kept as an answer is: 16 submits naming
    /// one host whose DNS never answers made 16 lookups, took every slot for ~10 s (the system
    /// resolver's own retries) and every other submit's new host was refused meanwhile; a
    /// batch's items naming it waited the whole budget each, one after another (probe s54a F3,
    /// F4). The lookup is a task of its own, not the submit's: it ends and says its answer to
    /// the others when the submit that started it is gone.
    pub async fn resolve(self: &Arc<Self>, host: &str, port: u16) -> Answer {
        let key = (host.to_ascii_lowercase(), port);
        let mut answered = {
            let mut under_way = self.under_way.lock();
            if let Some((at, answer)) = self.answers.lock().get(&key) {
                if at.elapsed() < CACHE_FOR {
                    return answer.clone();
                }
            }
            match under_way.get(&key) {
                // Its task is still there (not ended with its runtime).
                Some(answered) if answered.has_changed().is_ok() => answered.clone(),
                _ => {
                    let (tell, answered) = watch::channel(None);
                    under_way.insert(key.clone(), answered.clone());
                    tokio::spawn(self.clone().look_up(key, host.to_string(), tell));
                    answered
                }
            }
        };
        // The lookup answers within the budget; bounded all the same.
        let waited = tokio::time::timeout(self.budget * 2, answered.wait_for(Option::is_some));
        let answer = match waited.await {
            Ok(Ok(answer)) => answer.clone(),
            Ok(Err(_)) | Err(_) => None,
        };
        answer.unwrap_or_else(|| Err(self.late(host)))
    }

    /// Looks `key` up (`host` as the submit wrote it), tells its answer to the submits waiting
    /// and keeps it. Waits for a slot within the budget: a name that never got one was not looked
    /// up, and is said so (it was said not to resolve) and not kept. An answer that comes after
    /// the budget is kept when it comes: a resolver that answers only after its own retry (one
    /// answering A but not AAAA waits the system resolver's timeout, 5 s by default, probe s54a
    /// F9) is answered on a try after it.
    async fn look_up(self: Arc<Self>, key: Key, host: String, tell: watch::Sender<Option<Answer>>) {
        let now = tokio::time::Instant::now();
        let deadline = now + self.budget;
        // While the slots are known to be full (lookups that never answer hold them: their
        // threads outlive the budget), a name is not waited for: a batch naming new hosts then
        // waited the whole budget for each, one after another, past the request's timeout
        // (review of session 54).
        let full = self.full_until.lock().is_some_and(|until| now < until);
        let slot = if full {
            self.slots.clone().try_acquire_owned().ok()
        } else {
            let slot = tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned()).await;
            let slot = slot.ok().and_then(Result::ok);
            if slot.is_none() {
                *self.full_until.lock() = Some(tokio::time::Instant::now() + self.budget);
            }
            slot
        };
        let Some(slot) = slot else {
            self.under_way.lock().remove(&key);
            let _ = tell.send(Some(Err(Refused::Unresolved(format!(
                "`{host}` was not looked up: the {} host lookups at submit that may run at once \
                 were all under way for {}s",
                self.at_once,
                self.budget.as_secs_f64()
            )))));
            return;
        };
        let (name, resolver, said) = (key.clone(), self.resolver.clone(), host.clone());
        // The slot goes with the thread: it is released when the resolver answers.
        let mut lookup = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            answer_of(&said, resolver(&name.0, name.1))
        });
        let answer = match tokio::time::timeout_at(deadline, &mut lookup).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(self.late(&host)),
            Err(_) => {
                self.settle(&key, Err(self.late(&host)), &tell);
                if let Ok(answer) = lookup.await {
                    self.keep(&key, answer);
                }
                return;
            }
        };
        self.settle(&key, answer, &tell);
    }

    /// The refusal of `host` that did not resolve within the budget.
    fn late(&self, host: &str) -> Refused {
        Refused::Unresolved(format!(
            "`{host}` did not resolve within {}s",
            self.budget.as_secs_f64()
        ))
    }

    /// Ends the lookup of `key` under way with `answer`: kept, and told to the submits waiting.
    fn settle(&self, key: &Key, answer: Answer, tell: &watch::Sender<Option<Answer>>) {
        // Kept before the lookup is no longer under way: a submit finds one or the other.
        let mut under_way = self.under_way.lock();
        self.keep(key, answer.clone());
        under_way.remove(key);
        let _ = tell.send(Some(answer));
    }

    /// Keeps `answer` for `key` ([`CACHE_FOR`]).
    fn keep(&self, key: &Key, answer: Answer) {
        let mut kept = self.answers.lock();
        if kept.len() >= CACHE_NAMES {
            kept.retain(|_, (at, _)| at.elapsed() < CACHE_FOR);
            if kept.len() >= CACHE_NAMES {
                kept.clear();
            }
        }
        kept.insert(key.clone(), (Instant::now(), answer));
    }
}

/// The system lookups made, by (name, port): for tests.
#[cfg(test)]
static LOOKED_UP: LazyLock<parking_lot::Mutex<HashMap<Key, usize>>> =
    LazyLock::new(Default::default);

/// How many times the system's resolver was asked for `host:port`.
#[cfg(test)]
pub(super) fn times_looked_up(host: &str, port: u16) -> usize {
    let key = (host.to_string(), port);
    LOOKED_UP.lock().get(&key).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::sync::{Condvar, Mutex};

    use super::*;

    pub(super) fn looked_up(host: &str, port: u16) {
        *LOOKED_UP
            .lock()
            .entry((host.to_string(), port))
            .or_default() += 1;
    }

    /// Short, so that the tests are; the lookups that do not answer never do (until opened).
    const BUDGET: Duration = Duration::from_millis(300);

    /// The address the fake resolver answers.
    const PUBLIC: [u8; 4] = [8, 8, 8, 8];

    /// A resolver that answers every name at once, except the names beginning with `slow`,
    /// answered only once it is opened (as a resolver that does not answer, or answers after
    /// its own retry); it counts the lookups of each name.
    #[derive(Default)]
    struct Fake {
        asked: Mutex<HashMap<String, usize>>,
        open: Mutex<bool>,
        opened: Condvar,
    }

    impl Fake {
        fn resolver(self: &Arc<Self>) -> Resolver {
            let fake = self.clone();
            Arc::new(move |host: &str, _port: u16| {
                *fake.asked.lock().unwrap().entry(host.into()).or_default() += 1;
                if host.starts_with("slow") {
                    let mut open = fake.open.lock().unwrap();
                    while !*open {
                        open = fake.opened.wait(open).unwrap();
                    }
                }
                Ok(vec![IpAddr::from(PUBLIC)])
            })
        }

        fn asked(&self, host: &str) -> usize {
            self.asked.lock().unwrap().get(host).copied().unwrap_or(0)
        }

        fn open(&self) {
            *self.open.lock().unwrap() = true;
            self.opened.notify_all();
        }
    }

    /// Opens its resolver when dropped (the test's end, or its panic): the runtime's shutdown
    /// waits for the blocking threads still in a lookup.
    struct Opens(Arc<Fake>);

    impl Drop for Opens {
        fn drop(&mut self) {
            self.0.open();
        }
    }

    /// A fake resolver, and lookups through it with `slots` at once.
    fn fake(slots: usize) -> (Arc<Fake>, Opens, Arc<Lookups>) {
        let fake = Arc::new(Fake::default());
        let lookups = Lookups::new(fake.resolver(), slots, BUDGET);
        (fake.clone(), Opens(fake), lookups)
    }

    fn unresolved(a: &Answer) -> &str {
        match a {
            Err(Refused::Unresolved(m)) => m,
            other => panic!("not unresolved: {other:?}"),
        }
    }

    /// 16 submits naming one host whose DNS never answers made 16 lookups, all the slots, and
    /// every other submit's new host was refused for ~10 s; a batch's items naming that host
    /// waited the whole budget each, one after another (7 items: past the request's timeout,
    /// its good items not stored): probe s54a F3, F4. Now the lookups of one name are one, its
    /// failure to answer is kept as answers are (asked again, it is answered at once, no slot
    /// taken), and a slot is left for another name.
    #[tokio::test]
    async fn lookups_of_one_name_are_one_and_a_name_that_did_not_answer_is_remembered() {
        let (fake, _opens, lookups) = fake(2);
        let same: Vec<_> = (0..4)
            .map(|_| {
                let lookups = lookups.clone();
                tokio::spawn(async move { lookups.resolve("slow.test", 443).await })
            })
            .collect();
        for one in same {
            let said = one.await.expect("no panic");
            assert!(unresolved(&said).contains("did not resolve"), "{said:?}");
        }
        // Asked again, as a batch's next items or a client's retries are.
        for _ in 0..3 {
            let said = lookups.resolve("SLOW.test", 443).await;
            assert!(unresolved(&said).contains("did not resolve"), "{said:?}");
        }
        assert_eq!(fake.asked("slow.test"), 1, "one lookup");
        assert_eq!(
            lookups.resolve("good.test", 443).await,
            Ok(vec![IpAddr::from(PUBLIC)])
        );
    }

    /// Every slot taken by lookups that do not answer: a new name was refused "did not
    /// resolve within 5s", though the resolver was never asked for it (probe s54a F3). Now the
    /// refusal says it was not looked up.
    #[tokio::test]
    async fn a_name_not_looked_up_for_want_of_a_slot_is_told_so() {
        let (fake, _opens, lookups) = fake(2);
        let (a, b) = tokio::join!(
            lookups.resolve("slow-a.test", 80),
            lookups.resolve("slow-b.test", 80)
        );
        assert!(unresolved(&a).contains("did not resolve"), "{a:?}");
        assert!(unresolved(&b).contains("did not resolve"), "{b:?}");
        let said = lookups.resolve("new.test", 80).await;
        let said = unresolved(&said);
        assert!(
            said.contains("not looked up") && !said.contains("did not resolve"),
            "{said}"
        );
        assert_eq!(fake.asked("new.test"), 0);
        // The slots known full, the next names are not waited for one after another (a batch
        // naming five new hosts waited the budget five times): they are told at once.
        let started = std::time::Instant::now();
        for name in ["n1.test", "n2.test", "n3.test", "n4.test", "n5.test"] {
            let said = lookups.resolve(name, 80).await;
            assert!(unresolved(&said).contains("not looked up"), "{said:?}");
        }
        assert!(started.elapsed() < BUDGET * 2, "{:?}", started.elapsed());
        // Once a slot is free again, names are looked up.
        fake.open();
        assert_eq!(
            resolved_soon(&lookups, "fresh.test").await,
            Ok(vec![IpAddr::from(PUBLIC)])
        );
    }

    /// `name` tried again every 10 ms, up to 2 s, until it resolves; the last answer.
    async fn resolved_soon(lookups: &Arc<Lookups>, name: &str) -> Answer {
        let mut said = lookups.resolve(name, 80).await;
        for _ in 0..200 {
            if said.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            said = lookups.resolve(name, 80).await;
        }
        said
    }

    /// A resolver that answers only after the budget (one answering A but never AAAA does after
    /// its own retry: 15 s with glibc's defaults, probe s54a F9) refused the name at every try,
    /// each a new lookup. Now its answer is kept when it comes: a try after it passes.
    #[tokio::test]
    async fn an_answer_that_comes_late_is_kept_for_the_next_try() {
        let (fake, _opens, lookups) = fake(2);
        let said = lookups.resolve("slow-late.test", 80).await;
        assert!(unresolved(&said).contains("did not resolve"), "{said:?}");
        fake.open();
        assert_eq!(
            resolved_soon(&lookups, "slow-late.test").await,
            Ok(vec![IpAddr::from(PUBLIC)])
        );
        assert_eq!(fake.asked("slow-late.test"), 1, "the late answer, kept");
    }
}
