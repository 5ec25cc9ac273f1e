//! [`Object`]: a derived struct read only from a JSON object, and [`Text`]: a string read
//! borrowed where it can be, for the borrowed fast paths that stand in for a
//! `serde_json::Value` read (streamed model chunks, DingTalk frames and robot messages).
//!
//! serde's derived structs also take an array of their fields in order, where
//! `Value::get` finds nothing: with this wrapper `{"usage":[1,2]}` has no usage, as the
//! general path says, instead of a usage read from the array's positions.

use std::borrow::Cow;
use std::ops::Deref;

use serde::de::{Deserializer, Visitor};
use serde::{forward_to_deserialize_any, Deserialize};

/// A JSON string borrowed from the text it was read from when it has no escapes (owned
/// when it has). serde borrows a `Cow<str>` field only when it is the field's whole type
/// and marked `#[serde(borrow)]`; an `Option<Cow<str>>` is always read owned, one
/// allocation per string. `Option<Text>` borrows.
#[derive(Deserialize, Debug, Default, Clone, PartialEq, Eq)]
#[serde(transparent)]
pub(crate) struct Text<'a>(#[serde(borrow)] pub(crate) Cow<'a, str>);

impl Deref for Text<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

/// `T` read from a JSON object only (an array, or any other value, is refused).
pub(crate) struct Object<T>(pub(crate) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(ObjectOnly(deserializer)).map(Object)
    }
}

impl<T: Default> Default for Object<T> {
    /// For a field that may be absent (`#[serde(default)]`).
    fn default() -> Self {
        Object(T::default())
    }
}

/// Hands a derived struct's visitor to `deserialize_map`, which takes objects only.
struct ObjectOnly<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for ObjectOnly<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(visitor)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
        identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug, PartialEq)]
    struct Pair {
        a: u8,
        b: u8,
    }

    #[test]
    fn a_text_without_escapes_is_borrowed_in_an_option_too() {
        #[derive(Deserialize)]
        struct Fields<'a> {
            #[serde(borrow)]
            plain: Option<Text<'a>>,
            #[serde(borrow)]
            escaped: Option<Text<'a>>,
            #[serde(borrow)]
            cow: Option<Cow<'a, str>>,
        }
        let f: Fields = serde_json::from_str(r#"{"plain":"a","escaped":"\n","cow":"a"}"#).unwrap();
        assert!(matches!(f.plain, Some(Text(Cow::Borrowed("a")))));
        assert_eq!(f.escaped.as_deref(), Some("\n"));
        assert!(matches!(f.escaped, Some(Text(Cow::Owned(_)))));
        // What `Text` is for: serde reads an `Option<Cow>` owned.
        assert!(matches!(f.cow, Some(Cow::Owned(_))));
    }

    #[test]
    fn an_object_is_read_and_an_array_of_the_fields_is_not() {
        let Object(pair) = serde_json::from_str::<Object<Pair>>(r#"{"b":2,"a":1}"#).unwrap();
        assert_eq!(pair, Pair { a: 1, b: 2 });
        assert!(
            serde_json::from_str::<Pair>("[1,2]").is_ok(),
            "derive takes arrays"
        );
        assert!(serde_json::from_str::<Object<Pair>>("[1,2]").is_err());
        assert!(serde_json::from_str::<Object<Pair>>("3").is_err());
    }
}
