//! [`Headers`]: a request's headers in one buffer, looked up by name.
//!
//! Every Check carries a dozen headers. Kept as a hash map of owned `String`s they cost two
//! allocations each and a table, on every request, for a map that is read a handful of
//! times and then dropped. Here the names and values are copied back to back into one
//! `String`, and a list of their places, ordered by a hash of the name, finds them: two
//! allocations per request whatever the number of headers, a binary search per look-up.
//!
//! The hash is foldhash, seeded at random once per process, so a client cannot choose
//! names that share one; names that do anyway are still told apart by their text. A door
//! that reads headers from its gateway collects them with a [`HeadersBuilder`], which
//! orders them once at the end and says what a repeated name means ([`Repeats`]): no
//! request makes building slower than `n log n`, however many headers it has.

use std::hash::BuildHasher as _;
use std::sync::LazyLock;

/// The process's hash of header names.
static NAMES: LazyLock<foldhash::fast::RandomState> = LazyLock::new(Default::default);

fn hash(name: &str) -> u64 {
    #[cfg(test)]
    if tests::COLLIDING.get() {
        // Few hashes for many names: the tests' way to reach the shared-hash paths.
        return name.len() as u64 % 3;
    }
    NAMES.hash_one(name)
}

/// A request's headers by name (lower-cased by the door that read them), each name once,
/// in no particular order.
///
/// Its `Debug` output hides the values of credential headers.
#[derive(Clone, Default)]
pub struct Headers {
    /// The names and values, back to back. A value replaced or removed leaves its bytes
    /// here until the whole is dropped; only a door's own changes do that.
    text: String,
    /// Where each header's name and value are in `text`, ordered by `hash`, names unique.
    entries: Vec<Entry>,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    hash: u64,
    name: (usize, usize),
    value: (usize, usize),
}

/// What a name that occurs more than once means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repeats {
    /// The values are joined with `,` in the order given, as Envoy joins repeated headers
    /// (RFC 9110 §5.3).
    Join,
    /// The last value is the header's (a protobuf map, a JSON object).
    Replace,
}

impl Headers {
    /// No headers, with room for `headers` of `bytes` in all.
    pub fn with_capacity(headers: usize, bytes: usize) -> Headers {
        Headers {
            text: String::with_capacity(bytes),
            entries: Vec::with_capacity(headers),
        }
    }

    fn name(&self, entry: &Entry) -> &str {
        slice(&self.text, entry.name)
    }

    fn value(&self, entry: &Entry) -> &str {
        slice(&self.text, entry.value)
    }

    /// The index of the entry named `name`, or where one would go, with the name's hash.
    fn find(&self, name: &str) -> (Result<usize, usize>, u64) {
        let hash = hash(name);
        let first = self.entries.partition_point(|entry| entry.hash < hash);
        let found = self
            .entries
            .get(first..)
            .unwrap_or_default()
            .iter()
            .take_while(|entry| entry.hash == hash)
            .position(|entry| self.name(entry) == name);
        (found.map(|at| first + at).ok_or(first), hash)
    }

    /// The value of the header `name` (compared exactly: names are lower-case).
    pub fn get(&self, name: &str) -> Option<&str> {
        let at = self.find(name).0.ok()?;
        Some(self.value(self.entries.get(at)?))
    }

    /// Whether there is a header `name`.
    pub fn contains_key(&self, name: &str) -> bool {
        self.find(name).0.is_ok()
    }

    /// The number of headers (a repeated name counts once).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Name and value of every header, in no particular order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            headers: self,
            entries: self.entries.iter(),
        }
    }

    /// Every header's name, in the order of [`Headers::iter`].
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.entries.iter().map(|entry| self.name(entry))
    }

    /// Appends `text`, answering where it is.
    fn push_text(&mut self, text: &str) -> (usize, usize) {
        let start = self.text.len();
        self.text.push_str(text);
        (start, self.text.len())
    }

    /// A new entry `name: value` at `at`, where its hash keeps the order.
    fn add(&mut self, at: usize, hash: u64, name: &str, value: &str) {
        let entry = Entry {
            hash,
            name: self.push_text(name),
            value: self.push_text(value),
        };
        self.entries.insert(at, entry);
    }

    /// Sets the header `name` to `value`, replacing an earlier value. One header at a time
    /// (a door's own change, a test): a door reading many uses a [`HeadersBuilder`].
    pub fn insert(&mut self, name: String, value: String) {
        match self.find(&name) {
            (Ok(at), _) => {
                let value = self.push_text(&value);
                if let Some(entry) = self.entries.get_mut(at) {
                    entry.value = value;
                }
            }
            (Err(at), hash) => self.add(at, hash, &name, &value),
        }
    }

    /// Removes the header `name`; whether there was one.
    pub fn remove(&mut self, name: &str) -> bool {
        match self.find(name).0 {
            Ok(at) => {
                self.entries.remove(at);
                true
            }
            Err(_) => false,
        }
    }
}

/// Collects a request's headers as a door reads them, in one buffer, and orders them once
/// ([`HeadersBuilder::build`]).
#[derive(Default)]
pub struct HeadersBuilder {
    /// Every header as given, in order; names not yet unique.
    headers: Headers,
}

impl HeadersBuilder {
    /// Room for `headers` of `bytes` in all.
    pub fn with_capacity(headers: usize, bytes: usize) -> HeadersBuilder {
        HeadersBuilder {
            headers: Headers::with_capacity(headers, bytes),
        }
    }

    /// A header as the gateway sent it; `name` must already be lower-case.
    pub fn push(&mut self, name: &str, value: &str) {
        let headers = &mut self.headers;
        let entry = Entry {
            hash: hash(name),
            name: headers.push_text(name),
            value: headers.push_text(value),
        };
        headers.entries.push(entry);
    }

    /// [`HeadersBuilder::push`] of a name in any case: it is lower-cased (ASCII) here.
    pub fn push_lowercased(&mut self, name: &str, value: &str) {
        let headers = &mut self.headers;
        let start = headers.text.len();
        headers
            .text
            .extend(name.chars().map(|c| c.to_ascii_lowercase()));
        let name = (start, headers.text.len());
        let entry = Entry {
            hash: hash(slice(&headers.text, name)),
            name,
            value: headers.push_text(value),
        };
        headers.entries.push(entry);
    }

    /// Whether no header was pushed.
    pub fn is_empty(&self) -> bool {
        self.headers.entries.is_empty()
    }

    /// The headers, a repeated name's values taken as `repeats` says.
    pub fn build(self, repeats: Repeats) -> Headers {
        let mut headers = self.headers;
        let text = &headers.text;
        // By hash, and by name where hashes are equal (rarely, but a repeated name's are),
        // so a name's repeats are side by side. Stable: they keep their order, for joining
        // and for "the last one".
        headers.entries.sort_by(|a, b| {
            a.hash
                .cmp(&b.hash)
                .then_with(|| slice(text, a.name).cmp(slice(text, b.name)))
        });
        let same =
            |a: &Entry, b: &Entry| a.hash == b.hash && slice(text, a.name) == slice(text, b.name);
        if !headers
            .entries
            .windows(2)
            .any(|pair| matches!(pair, [a, b] if same(a, b)))
        {
            return headers;
        }
        // Joined values are written after the text, at `base` onwards.
        let base = text.len();
        let mut joined = String::new();
        let mut unique: Vec<Entry> = Vec::with_capacity(headers.entries.len());
        for run in headers.entries.chunk_by(same) {
            let (Some(first), Some(last)) = (run.first(), run.last()) else {
                continue;
            };
            let value = match (run, repeats) {
                ([_], _) | (_, Repeats::Replace) => last.value,
                (_, Repeats::Join) => {
                    let start = base + joined.len();
                    for (i, entry) in run.iter().enumerate() {
                        if i > 0 {
                            joined.push(',');
                        }
                        joined.push_str(slice(text, entry.value));
                    }
                    (start, base + joined.len())
                }
            };
            unique.push(Entry { value, ..*first });
        }
        headers.text.push_str(&joined);
        headers.entries = unique;
        headers
    }
}

/// The text at `place` in `text`. Places are made where the text is pushed, at its
/// ends, so the slice always exists; were it not, the text is empty.
fn slice(text: &str, place: (usize, usize)) -> &str {
    text.get(place.0..place.1).unwrap_or_default()
}

/// Headers whose values are credentials: never printed.
const SECRET_HEADERS: [&str; 5] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "dpop",
    "x-api-key",
];

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(name, value)| {
                let shown = if SECRET_HEADERS.contains(&name) {
                    "[redacted]"
                } else {
                    value
                };
                (name, shown)
            }))
            .finish()
    }
}

impl PartialEq for Headers {
    /// The same names with the same values, in whatever order.
    fn eq(&self, other: &Headers) -> bool {
        self.len() == other.len()
            && self
                .iter()
                .all(|(name, value)| other.get(name) == Some(value))
    }
}

impl Eq for Headers {}

impl<N: AsRef<str>, V: AsRef<str>> FromIterator<(N, V)> for Headers {
    /// The headers as given (names as they are), the last value of a repeated name kept,
    /// as a map collects them.
    fn from_iter<I: IntoIterator<Item = (N, V)>>(pairs: I) -> Headers {
        let mut builder = HeadersBuilder::default();
        for (name, value) in pairs {
            builder.push(name.as_ref(), value.as_ref());
        }
        builder.build(Repeats::Replace)
    }
}

/// The headers' names and values ([`Headers::iter`]).
pub struct Iter<'h> {
    headers: &'h Headers,
    entries: std::slice::Iter<'h, Entry>,
}

impl<'h> Iterator for Iter<'h> {
    type Item = (&'h str, &'h str);

    fn next(&mut self) -> Option<(&'h str, &'h str)> {
        let entry = self.entries.next()?;
        Some((self.headers.name(entry), self.headers.value(entry)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'h> IntoIterator for &'h Headers {
    type Item = (&'h str, &'h str);
    type IntoIter = Iter<'h>;

    fn into_iter(self) -> Iter<'h> {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    thread_local! {
        /// Whether [`hash`] gives names of a length mod 3 one hash, on this thread.
        pub(super) static COLLIDING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// Runs `check` with the real hash and with one that makes most names share a hash.
    fn both_hashes(
        mut check: impl FnMut() -> Result<(), proptest::test_runner::TestCaseError>,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        for colliding in [false, true] {
            COLLIDING.set(colliding);
            let result = check();
            COLLIDING.set(false);
            result?;
        }
        Ok(())
    }

    /// What a plain ordered map makes of the same headers.
    fn reference(pairs: &[(String, String)], repeats: Repeats) -> BTreeMap<String, String> {
        let mut map = BTreeMap::<String, String>::new();
        for (name, value) in pairs {
            match (map.get_mut(name), repeats) {
                (Some(earlier), Repeats::Join) => {
                    earlier.push(',');
                    earlier.push_str(value);
                }
                _ => {
                    map.insert(name.clone(), value.clone());
                }
            }
        }
        map
    }

    fn built(pairs: &[(String, String)], repeats: Repeats) -> Headers {
        let mut builder = HeadersBuilder::default();
        for (name, value) in pairs {
            builder.push(name, value);
        }
        builder.build(repeats)
    }

    fn same(headers: &Headers, map: &BTreeMap<String, String>) -> bool {
        let mut listed: Vec<(&str, &str)> = headers.iter().collect();
        listed.sort();
        headers.len() == map.len()
            && listed
                .into_iter()
                .eq(map.iter().map(|(n, v)| (n.as_str(), v.as_str())))
            && map
                .iter()
                .all(|(n, v)| headers.get(n) == Some(v.as_str()) && headers.contains_key(n))
    }

    fn pairs() -> impl proptest::strategy::Strategy<Value = Vec<(String, String)>> {
        proptest::collection::vec(
            (
                proptest::prop_oneof!["[a-c]{0,2}", "x-[a-z0-9]{0,40}", "\\PC{0,12}",],
                "\\PC{0,16}",
            ),
            0..300,
        )
    }

    proptest::proptest! {
        /// Built at once, joined or replaced, the headers are what an ordered map holds,
        /// and every name finds its value.
        #[test]
        fn built_headers_are_what_a_map_holds(pairs in pairs()) {
            both_hashes(|| {
                for repeats in [Repeats::Join, Repeats::Replace] {
                    let headers = built(&pairs, repeats);
                    proptest::prop_assert!(same(&headers, &reference(&pairs, repeats)));
                }
                Ok(())
            })?;
        }

        /// Changed one at a time (set, removed, in any mix), they stay what an
        /// ordered map changed alike holds, and names not there are not found.
        #[test]
        fn headers_changed_one_at_a_time_are_what_a_map_holds(
            start in pairs(),
            changes in proptest::collection::vec(
                (proptest::bool::ANY, "[a-c]{0,2}", "\\PC{0,8}"),
                0..100,
            ),
            absent in "\\PC{0,6}",
        ) {
            both_hashes(|| {
                let mut headers = built(&start, Repeats::Join);
                let mut map = reference(&start, Repeats::Join);
                for (change, name, value) in &changes {
                    if *change {
                        headers.insert(name.clone(), value.clone());
                        map.insert(name.clone(), value.clone());
                    } else {
                        proptest::prop_assert_eq!(headers.remove(name), map.remove(name).is_some());
                    }
                }
                proptest::prop_assert!(same(&headers, &map));
                proptest::prop_assert_eq!(headers.get(&absent), map.get(&absent).map(String::as_str));
                Ok(())
            })?;
        }

        /// Lower-cased as pushed: as `to_ascii_lowercase` of the name.
        #[test]
        fn pushed_names_are_lower_cased_as_ascii(name in "\\PC{0,20}", value in "\\PC{0,10}") {
            let mut builder = HeadersBuilder::default();
            builder.push_lowercased(&name, &value);
            let headers = builder.build(Repeats::Join);
            proptest::prop_assert_eq!(headers.get(&name.to_ascii_lowercase()), Some(value.as_str()));
        }
    }

    #[test]
    fn credentials_are_not_printed() {
        let headers: Headers = [("authorization", "Bearer secret"), ("accept", "*/*")]
            .into_iter()
            .collect();
        let shown = format!("{headers:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("*/*"), "{shown}");
    }

    /// Many repeats of interleaved names join in one pass, not a copy per repeat.
    #[test]
    fn interleaved_repeats_are_joined_once() {
        let mut builder = HeadersBuilder::default();
        for i in 0..20_000 {
            builder.push(if i % 2 == 0 { "a" } else { "b" }, "v");
        }
        let headers = builder.build(Repeats::Join);
        assert_eq!(headers.len(), 2);
        assert_eq!(headers.get("a").map(str::len), Some(2 * 10_000 - 1));
        // The text holds what was pushed and the joined values: linear in the input.
        assert!(headers.text.len() < 4 * 20_000 + 2 * 20_000);
    }
}
