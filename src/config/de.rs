//! Serde glue for checked values.
//!
//! Invariant: every check runs inside the deserialization call of the value it judges, so
//! the YAML loader reports a failure with that value's key path, line and column (a check
//! run after the whole struct was built would only know the struct's position). Messages
//! come from [`super::checks`] and [`super::env`] and never contain the value.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::checks::{self, InvalidValue};
use super::env::{expand_for_load, ExpandError};

/// A check of one (interpolated) string value.
type Check = fn(&str) -> Result<(), InvalidValue>;

/// Why one string value is refused: its `${...}`, or the expanded value.
#[derive(Debug, thiserror::Error)]
enum ValueError {
    #[error(transparent)]
    Expand(#[from] ExpandError),
    #[error(transparent)]
    Invalid(#[from] InvalidValue),
}

/// Deserializes one string scalar through `convert`; its error is raised while the YAML
/// loader is positioned on that scalar.
pub(super) fn scalar<'de, D, T, M, F>(d: D, convert: F) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    M: fmt::Display,
    F: FnOnce(&str) -> Result<T, M>,
{
    struct ScalarVisitor<F>(F);
    impl<'de, T, M: fmt::Display, F: FnOnce(&str) -> Result<T, M>> Visitor<'de> for ScalarVisitor<F> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.0)(v).map_err(E::custom)
        }
    }
    d.deserialize_str(ScalarVisitor(convert))
}

/// A string with `${VAR}` expanded that passes `check`.
fn checked<'de, D: Deserializer<'de>>(d: D, check: Check) -> Result<String, D::Error> {
    scalar(d, |raw| -> Result<String, ValueError> {
        let Some(value) = expand_for_load(raw)? else {
            return Ok(String::new());
        };
        check(&value)?;
        Ok(value)
    })
}

/// Like [`checked`] for an optional value (absent or `null` is `None`).
fn checked_opt<'de, D: Deserializer<'de>>(d: D, check: Check) -> Result<Option<String>, D::Error> {
    struct OptVisitor(Check);
    impl<'de> Visitor<'de> for OptVisitor {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            checked(d, self.0).map(Some)
        }
    }
    d.deserialize_option(OptVisitor(check))
}

fn anything(_: &str) -> Result<(), InvalidValue> {
    Ok(())
}

/// A string with `${VAR}` expanded.
pub fn interpolated<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked(d, anything)
}

/// An interpolated [`checks::http_url`].
pub fn http_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked(d, checks::http_url)
}

/// An optional interpolated [`checks::http_url`].
pub fn http_url_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    checked_opt(d, checks::http_url)
}

/// A list of interpolated [`checks::http_url`]s.
pub fn http_urls<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct Url(String);
    impl<'de> Deserialize<'de> for Url {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            checked(d, checks::http_url).map(Url)
        }
    }
    Ok(Vec::<Url>::deserialize(d)?
        .into_iter()
        .map(|u| u.0)
        .collect())
}

/// An interpolated [`checks::name`].
pub fn name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked(d, checks::name)
}

/// An optional interpolated [`checks::name`].
pub fn name_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    checked_opt(d, checks::name)
}

/// An interpolated [`checks::socket_addr`].
pub fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked(d, checks::socket_addr)
}

/// Send targets: `NAME: ID`, each name a [`checks::name`] (taken literally) and each id
/// an interpolated [`checks::target_id`], reported at its own line.
pub fn targets<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    struct Alias(String);
    impl<'de> Deserialize<'de> for Alias {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            scalar(d, |k| checks::name(k).map(|()| Alias(k.to_string())))
        }
    }
    struct Id(String);
    impl<'de> Deserialize<'de> for Id {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            checked(d, checks::target_id).map(|v| Id(v.trim().to_string()))
        }
    }
    struct TargetsVisitor;
    impl<'de> Visitor<'de> for TargetsVisitor {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of NAME: cid... or user:STAFFID")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(Alias(name)) = map.next_key()? {
                let Id(id) = map.next_value()?;
                out.insert(name, id);
            }
            Ok(out)
        }
    }
    d.deserialize_map(TargetsVisitor)
}

/// An unsigned integer of at least `MIN` (the message names the minimum).
pub fn at_least<'de, D, T, const MIN: u64>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    in_range::<D, T, MIN, { u64::MAX }>(d)
}

/// An unsigned integer in `MIN..=MAX` (the message names the bound that was crossed).
pub fn in_range<'de, D, T, const MIN: u64, const MAX: u64>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    struct RangeVisitor<T, const MIN: u64, const MAX: u64>(std::marker::PhantomData<T>);
    impl<'de, T: TryFrom<u64>, const MIN: u64, const MAX: u64> Visitor<'de>
        for RangeVisitor<T, MIN, MAX>
    {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            if MAX == u64::MAX {
                write!(f, "a whole number of at least {MIN}")
            } else {
                write!(f, "a whole number from {MIN} to {MAX}")
            }
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            if v < MIN {
                return Err(E::custom(format!("below the minimum of {MIN}")));
            }
            if v > MAX {
                return Err(E::custom(format!("above the maximum of {MAX}")));
            }
            T::try_from(v).map_err(|_| E::custom("too large"))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(E::custom(format!("below the minimum of {MIN}"))),
            }
        }
        fn visit_u128<E: de::Error>(self, v: u128) -> Result<T, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(E::custom(format!("above the maximum of {MAX}"))),
            }
        }
        fn visit_i128<E: de::Error>(self, v: i128) -> Result<T, E> {
            match u128::try_from(v) {
                Ok(v) => self.visit_u128(v),
                Err(_) => Err(E::custom(format!("below the minimum of {MIN}"))),
            }
        }
    }
    // `any`, not `u64`: the YAML reader refuses a negative number before a `u64` visitor
    // sees it ("invalid type: an integer"); this way it is "below the minimum".
    d.deserialize_any(RangeVisitor::<T, MIN, MAX>(std::marker::PhantomData))
}

/// Like [`in_range`] for an optional value (absent or `null` is `None`).
pub fn in_range_opt<'de, D, T, const MIN: u64, const MAX: u64>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    struct Ranged<T, const MIN: u64, const MAX: u64>(T);
    impl<'de, T: TryFrom<u64>, const MIN: u64, const MAX: u64> Deserialize<'de>
        for Ranged<T, MIN, MAX>
    {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            in_range::<D, T, MIN, MAX>(d).map(Ranged)
        }
    }
    Ok(Option::<Ranged<T, MIN, MAX>>::deserialize(d)?.map(|m| m.0))
}

/// A map of `NAME: N` with every `N` in `MIN..=MAX`, each value reported at its own line
/// (`limits.max_concurrency_per_model`).
pub fn counts_in_range<'de, D, const MIN: u64, const MAX: u64>(
    d: D,
) -> Result<BTreeMap<String, usize>, D::Error>
where
    D: Deserializer<'de>,
{
    struct Count<const MIN: u64, const MAX: u64>(usize);
    impl<'de, const MIN: u64, const MAX: u64> Deserialize<'de> for Count<MIN, MAX> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            in_range::<D, usize, MIN, MAX>(d).map(Count)
        }
    }
    let counts = BTreeMap::<String, Count<MIN, MAX>>::deserialize(d)?;
    Ok(counts.into_iter().map(|(k, v)| (k, v.0)).collect())
}

/// The `models:` map, each model's runtime keys checked
/// ([`super::ModelConfig::check_endpoints`]) while the loader is still on that model, so
/// the error names `models.NAME` and its line.
pub fn models<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, super::ModelConfig>, D::Error> {
    struct Checked(super::ModelConfig);
    impl<'de> Deserialize<'de> for Checked {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct ModelVisitor;
            impl<'de> Visitor<'de> for ModelVisitor {
                type Value = Checked;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a model's settings (kind, base_url or replicas, model, ...)")
                }
                fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Checked, A::Error> {
                    // Built and checked inside this visit: an error raised here carries
                    // the model's own position, not that of the `models:` map.
                    let model = super::ModelConfig::deserialize(
                        de::value::MapAccessDeserializer::new(map),
                    )?;
                    model.check_endpoints().map_err(de::Error::custom)?;
                    Ok(Checked(model))
                }
            }
            d.deserialize_map(ModelVisitor)
        }
    }
    Ok(BTreeMap::<String, Checked>::deserialize(d)?
        .into_iter()
        .map(|(name, m)| (name, m.0))
        .collect())
}
