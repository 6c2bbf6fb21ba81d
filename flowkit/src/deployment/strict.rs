//! Reading parameters as strictly as their schema does.
//!
//! serde_json's `Value` deserializer takes two forms besides the ones `Serialize` writes and
//! schemars describes: a struct (or struct variant) written as an array of its fields in
//! order, and a unit variant written as `{"Variant": null}`. A parameter schema refuses both,
//! so the worker would run what the server refuses (and the other way round for a client that
//! trusts serde). [`Strict`] is `Value`'s deserializer without those two forms, all the way
//! down, so schema and deserialization accept the same parameters.

use serde::de::value::{MapDeserializer, SeqDeserializer};
use serde::de::{
    self, DeserializeSeed, EnumAccess, Error as _, IntoDeserializer, Unexpected, VariantAccess,
    Visitor,
};
use serde_json::{Error, Map, Value};

/// A JSON value to deserialize strictly (see the module's doc).
pub(crate) struct Strict(pub(crate) Value);

fn unexpected(value: &Value) -> Unexpected<'_> {
    match value {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Unexpected::Unsigned(u),
            (_, Some(i), _) => Unexpected::Signed(i),
            (_, _, Some(f)) => Unexpected::Float(f),
            _ => Unexpected::Other("number"),
        },
        Value::String(s) => Unexpected::Str(s),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}

fn seq<'de, V: Visitor<'de>>(items: Vec<Value>, visitor: V) -> Result<V::Value, Error> {
    let mut access = SeqDeserializer::new(items.into_iter().map(Strict));
    let value = visitor.visit_seq(&mut access)?;
    access.end()?;
    Ok(value)
}

fn map<'de, V: Visitor<'de>>(entries: Map<String, Value>, visitor: V) -> Result<V::Value, Error> {
    let mut access = MapDeserializer::new(entries.into_iter().map(|(k, v)| (k, Strict(v))));
    let value = visitor.visit_map(&mut access)?;
    access.end()?;
    Ok(value)
}

impl<'de> IntoDeserializer<'de, Error> for Strict {
    type Deserializer = Strict;

    fn into_deserializer(self) -> Strict {
        self
    }
}

impl<'de> de::Deserializer<'de> for Strict {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Array(items) => seq(items, visitor),
            Value::Object(entries) => map(entries, visitor),
            // Scalars have no inner values to be lenient about.
            scalar => de::Deserializer::deserialize_any(scalar, visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            other => visitor.visit_some(Strict(other)),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            Value::Object(entries) => map(entries, visitor),
            // Not an array of the fields in order: a schema says `"type": "object"`.
            other => Err(Error::invalid_type(unexpected(&other), &visitor)),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            Value::String(variant) => visitor.visit_enum(Variant {
                variant,
                value: None,
            }),
            Value::Object(entries) if entries.len() == 1 => {
                let (variant, value) = entries.into_iter().next().expect("one entry");
                visitor.visit_enum(Variant {
                    variant,
                    value: Some(value),
                })
            }
            Value::Object(_) => Err(Error::invalid_value(
                Unexpected::Map,
                &"a map with a single key, the variant",
            )),
            other => Err(Error::invalid_type(
                unexpected(&other),
                &"a string or a map with a single key",
            )),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map identifier
    }
}

/// A variant: its name, and its content unless it was written as a bare string.
struct Variant {
    variant: String,
    value: Option<Value>,
}

impl<'de> EnumAccess<'de> for Variant {
    type Error = Error;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self), Error> {
        let name = seed.deserialize(self.variant.clone().into_deserializer())?;
        Ok((name, self))
    }
}

impl<'de> VariantAccess<'de> for Variant {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        match self.value {
            None => Ok(()),
            // Not `{"Variant": null}`: a schema lists a unit variant as a string.
            Some(value) => Err(Error::invalid_type(
                unexpected(&value),
                &"nothing: a unit variant is written as a bare string",
            )),
        }
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, Error> {
        match self.value {
            Some(value) => seed.deserialize(Strict(value)),
            None => Err(Error::invalid_type(
                Unexpected::UnitVariant,
                &"newtype variant",
            )),
        }
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Some(Value::Array(items)) => seq(items, visitor),
            Some(other) => Err(Error::invalid_type(unexpected(&other), &"tuple variant")),
            None => Err(Error::invalid_type(
                Unexpected::UnitVariant,
                &"tuple variant",
            )),
        }
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.value {
            Some(Value::Object(entries)) => map(entries, visitor),
            Some(other) => Err(Error::invalid_type(unexpected(&other), &"struct variant")),
            None => Err(Error::invalid_type(
                Unexpected::UnitVariant,
                &"struct variant",
            )),
        }
    }
}

/// `T` from `value`, strictly.
pub(crate) fn from_value<T: de::DeserializeOwned>(value: Value) -> Result<T, Error> {
    T::deserialize(Strict(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, PartialEq, Deserialize)]
    struct Point {
        x: u8,
        y: Option<u8>,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    enum Shape {
        Dot,
        Circle(u8),
        Pair(u8, u8),
        Box { w: u8 },
    }

    #[test]
    fn the_forms_serialize_writes_are_read() {
        assert_eq!(
            from_value::<Point>(json!({"x": 1, "y": null})).unwrap(),
            Point { x: 1, y: None }
        );
        assert_eq!(
            from_value::<Vec<Shape>>(
                json!(["Dot", {"Circle": 2}, {"Pair": [1, 2]}, {"Box": {"w": 3}}])
            )
            .unwrap(),
            [
                Shape::Dot,
                Shape::Circle(2),
                Shape::Pair(1, 2),
                Shape::Box { w: 3 }
            ]
        );
        assert_eq!(
            from_value::<(u8, String)>(json!([1, "a"])).unwrap(),
            (1, "a".into())
        );
        assert!(from_value::<(u8,)>(json!([1, 2])).is_err());
    }

    #[test]
    fn the_lenient_forms_are_refused_at_any_depth() {
        assert!(serde_json::from_value::<Point>(json!([1, 2])).is_ok());
        assert!(from_value::<Point>(json!([1, 2])).is_err());
        assert!(serde_json::from_value::<Shape>(json!({"Dot": null})).is_ok());
        assert!(from_value::<Shape>(json!({"Dot": null})).is_err());
        assert!(from_value::<Vec<Option<Shape>>>(json!([{"Box": [3]}])).is_err());
        assert!(from_value::<Vec<Point>>(json!([[1, null]])).is_err());
    }
}
