//! How the YAML text becomes the validated sections, so that each key is
//! stated once: as a field of its section (`config.rs`, `replication.rs`),
//! with its default in the section's `Default`.
//!
//! Owns [`load`] and the serde glue around the derived `Deserialize` of the
//! sections (`#[serde(default, deny_unknown_fields, rename_all = "camelCase")]`):
//!
//! - [`section`] (a field's `deserialize_with` for every section): a key that
//!   is present with an empty value (`key:`, `key: ~`) takes its default,
//!   like a missing key — the default of that field in the section's
//!   `Default`, read back through its `Serialize`; a whole empty section is
//!   the section's `Default`. serde's own errors (unknown key, wrong type)
//!   pass through untouched, so they keep naming the key and the line.
//! - the original smss's keys (`legacy.rs`) are taken out of the section
//!   they were in before the derived code sees them: their values are
//!   collected into [`IgnoredKey`]s, and an unknown key's error still lists
//!   them as expected, as the old raw structs did.
//! - [`refuse`]: a value of the right YAML type that does not convert (a
//!   port above 65535, `bind: localhost`, …) becomes a
//!   [`ConfigError::Invalid`] naming its key. It is noted and reading goes
//!   on, so a syntax or type error anywhere in the file is still the error
//!   reported first; then the first refused value in the file.
//!
//! The notes live in a thread-local for the duration of one [`load`] (serde's
//! derived code gives a field's deserializer no other way to reach it). Runs
//! once on the main thread at startup.

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use super::error::{ConfigError, invalid};
use super::legacy::{self, Found, IgnoredKey, LegacyKey};

/// What one [`load`] notes besides the value it builds.
#[derive(Default)]
struct Reading {
    /// The keys from the top of the file to the section being read.
    path: Vec<String>,
    /// Values that do not convert, in file order.
    refused: Vec<ConfigError>,
    /// The original smss's keys found, with their values.
    ignored: Vec<IgnoredKey>,
}

thread_local! {
    static READING: RefCell<Option<Reading>> = const { RefCell::new(None) };
}

fn with_reading<R>(f: impl FnOnce(&mut Reading) -> R) -> Option<R> {
    READING.with(|r| r.borrow_mut().as_mut().map(f))
}

/// Reads `text` into `T` (the whole config). A syntax or type error is a
/// [`ConfigError::Parse`] carrying serde_yaml's message (key and line);
/// otherwise the first value that does not convert is the error. On success,
/// also the legacy keys found, in [`LegacyKey::ALL`]'s order.
pub(super) fn load<T>(text: &str) -> Result<(T, Vec<IgnoredKey>), ConfigError>
where
    T: for<'de> Deserialize<'de> + Default + Serialize,
{
    READING.with(|r| *r.borrow_mut() = Some(Reading::default()));
    let read = section::<_, T>(serde_yaml::Deserializer::from_str(text));
    let reading = READING.with(|r| r.borrow_mut().take()).unwrap_or_default();
    let value = read.map_err(|e| ConfigError::Parse {
        path: None,
        msg: e.to_string(),
    })?;
    if let Some(e) = reading.refused.into_iter().next() {
        return Err(e);
    }
    let mut ignored = reading.ignored;
    ignored.sort_by_key(|k| LegacyKey::ALL.iter().position(|&a| a == k.key));
    Ok((value, ignored))
}

/// A value that deserialized but does not convert: noted as a
/// [`ConfigError::Invalid`] for `key`, and `placeholder` stands in for it so
/// reading goes on (the config is never used: [`load`] returns the error).
/// Outside a [`load`] it is a serde error.
pub(super) fn refuse<T, E: de::Error>(
    key: &'static str,
    msg: String,
    placeholder: T,
) -> Result<T, E> {
    let mut msg = Some(msg);
    let noted = with_reading(|r| {
        if let Some(m) = msg.take() {
            r.refused.push(invalid(key, m));
        }
    });
    match (noted, msg) {
        (Some(()), _) | (None, None) => Ok(placeholder),
        (None, Some(m)) => Err(E::custom(format!("{key}: {m}"))),
    }
}

/// A `usize` written as a YAML integer (read as `u64`, so a negative value
/// is refused with the same message as the other integer keys).
pub(super) fn usize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let v = u64::deserialize(d)?;
    usize::try_from(v).map_err(|_| de::Error::custom(format!("{v} is too large")))
}

/// A section (`deserialize_with` of every section field, and the whole
/// file): empty is `T::default()`; otherwise its keys, where an empty value
/// takes that field's default and legacy keys are set aside.
pub(super) fn section<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default + Serialize,
{
    d.deserialize_option(SectionVisitor(PhantomData))
}

struct SectionVisitor<T>(PhantomData<T>);

impl<'de, T> Visitor<'de> for SectionVisitor<T>
where
    T: Deserialize<'de> + Default + Serialize,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping")
    }

    fn visit_none<E: de::Error>(self) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        let defaults = serde_yaml::to_value(T::default()).map_err(de::Error::custom)?;
        T::deserialize(Section { inner: d, defaults })
    }
}

/// The deserializer a section's derived code is handed: it only ever asks
/// for a struct, whose map it gets through [`Entries`].
struct Section<D> {
    inner: D,
    defaults: Value,
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Section<D> {
    type Error = D::Error;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let defaults = self.defaults;
        let fields_visitor = Fields {
            visitor,
            fields,
            defaults,
        };
        self.inner.deserialize_struct(name, fields, fields_visitor)
    }

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_any(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// The section's own visitor, with its map wrapped in [`Entries`].
struct Fields<V> {
    visitor: V,
    fields: &'static [&'static str],
    defaults: Value,
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Fields<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.visitor.expecting(f)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let section = with_reading(|r| r.path.join(".")).unwrap_or_default();
        self.visitor.visit_map(Entries {
            map,
            fields: self.fields,
            defaults: self.defaults,
            legacy: legacy::names(&section),
            section,
            key: String::new(),
            seen: Vec::new(),
        })
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.visitor.visit_seq(seq)
    }
}

/// A section's map as its derived code sees it: legacy keys taken out, an
/// empty value replaced by the field's default.
struct Entries<A> {
    map: A,
    fields: &'static [&'static str],
    defaults: Value,
    /// Where this section is (`""` for the top, `store`, `timeout.net`).
    section: String,
    /// The legacy keys this section had in the original config.
    legacy: Vec<&'static str>,
    /// The key whose value comes next.
    key: String,
    /// Legacy keys already read (a repeat is an error, as for any key).
    seen: Vec<&'static str>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Entries<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let mut seed = Some(seed);
        loop {
            let key = KeySeed {
                seed: &mut seed,
                name: &mut self.key,
                fields: self.fields,
                section: &self.section,
                legacy: &self.legacy,
            };
            match self.map.next_key_seed(key)? {
                None => return Ok(None),
                Some(Key::Field(k)) => return Ok(Some(k)),
                Some(Key::Legacy(found)) => self.legacy_value(found)?,
            }
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        let default = self.defaults.get(self.key.as_str()).cloned();
        let key = std::mem::take(&mut self.key);
        with_reading(|r| r.path.push(key));
        let value = self.map.next_value_seed(OrDefault {
            seed,
            default: default.unwrap_or(Value::Null),
        });
        with_reading(|r| r.path.pop());
        value
    }
}

impl<'de, A: MapAccess<'de>> Entries<A> {
    /// Reads the value of the legacy key just read and notes it.
    fn legacy_value(&mut self, found: Found) -> Result<(), A::Error> {
        let name = found.name();
        if self.seen.contains(&name) {
            return Err(de::Error::duplicate_field(name));
        }
        self.seen.push(name);
        let values: Vec<(LegacyKey, Option<Value>)> = match found {
            Found::Key(key) => vec![(key, self.map.next_value()?)],
            Found::Background => self
                .map
                .next_value::<Option<legacy::RawBackground>>()?
                .unwrap_or_default()
                .keys()
                .into(),
        };
        for (key, value) in values {
            match legacy::ignored([(key, value)]) {
                Ok(found) => with_reading(|r| r.ignored.extend(found)),
                Err(e) => with_reading(|r| r.refused.push(e)),
            };
        }
        Ok(())
    }
}

/// A key as [`KeySeed`] read it.
enum Key<F> {
    /// One of the section's fields, as its derived code's key seed made it.
    Field(F),
    /// A key of the original smss's config, whose value the section sets aside.
    Legacy(Found),
}

/// Reads one key: a legacy key is set aside; an unknown one is refused,
/// listing the legacy keys too; any other goes to the derived code's own key
/// seed.
struct KeySeed<'a, K> {
    seed: &'a mut Option<K>,
    name: &'a mut String,
    fields: &'static [&'static str],
    section: &'a str,
    legacy: &'a [&'static str],
}

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for KeySeed<'_, K> {
    type Value = Key<K::Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl<'de, K: DeserializeSeed<'de>> Visitor<'de> for KeySeed<'_, K> {
    type Value = Key<K::Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field identifier")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        v.clone_into(self.name);
        if let Some(found) = legacy::lookup(self.section, v) {
            return Ok(Key::Legacy(found));
        }
        if !self.legacy.is_empty() && !self.fields.contains(&v) {
            return Err(E::custom(unknown_field(v, self.fields, self.legacy)));
        }
        match self.seed.take() {
            Some(seed) => seed.deserialize(v.into_deserializer()).map(Key::Field),
            None => Err(E::custom("a key was read twice")),
        }
    }
}

/// serde's "unknown field" message, with the legacy keys after the fields
/// (where the raw structs of the original layout declared them).
fn unknown_field(name: &str, fields: &[&str], legacy: &[&str]) -> String {
    let all: Vec<String> = fields
        .iter()
        .chain(legacy)
        .map(|f| format!("`{f}`"))
        .collect();
    match all.as_slice() {
        [] => format!("unknown field `{name}`, there are no fields"),
        [one] => format!("unknown field `{name}`, expected {one}"),
        [a, b] => format!("unknown field `{name}`, expected {a} or {b}"),
        many => format!(
            "unknown field `{name}`, expected one of {}",
            many.join(", ")
        ),
    }
}

/// A field's value: empty (`key:`, `key: ~`) reads the field's default.
struct OrDefault<S> {
    seed: S,
    default: Value,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for OrDefault<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for OrDefault<S> {
    type Value = S::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value")
    }

    fn visit_none<E: de::Error>(self) -> Result<S::Value, E> {
        self.seed.deserialize(self.default).map_err(E::custom)
    }

    fn visit_unit<E: de::Error>(self) -> Result<S::Value, E> {
        self.visit_none()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.seed.deserialize(d)
    }
}
