//! JSON the project writes never holds NaN or ±∞. serde_json writes a non-finite float as
//! `null` without a word, and `null` does not read back as a number: a checkpoint that
//! cannot resume, a report that says nothing. [`check_finite`] walks a value the way a
//! serializer does and names the first non-finite field; [`to_string_pretty`] and
//! [`to_value`] refuse such a value with that name. Fields that may legitimately have no
//! value are `Option`s, so `null` in the files this crate writes always means "none".

use std::fmt::Display;

use serde::ser::{self, Serialize};
use serde_json::Error;

/// `Err` naming the first NaN or ±∞ inside `value` (e.g. `history[2].train_loss is NaN`).
pub fn check_finite<T: Serialize + ?Sized>(value: &T) -> Result<(), Error> {
    value.serialize(&mut Walker::default())
}

/// Pretty JSON of `value`, refusing NaN and ±∞ (see the module docs).
pub fn to_string_pretty<T: Serialize + ?Sized>(value: &T) -> Result<String, Error> {
    check_finite(value)?;
    serde_json::to_string_pretty(value)
}

/// Compact JSON of `value`, refusing NaN and ±∞.
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> Result<String, Error> {
    check_finite(value)?;
    serde_json::to_string(value)
}

/// `value` as a JSON tree, refusing NaN and ±∞ (`serde_json::to_value` turns them into
/// `null`).
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<serde_json::Value, Error> {
    check_finite(value)?;
    serde_json::to_value(value)
}

/// A serializer that produces nothing and only checks floats, keeping the path it is at.
#[derive(Default)]
struct Walker {
    path: Vec<String>,
    /// Next element index of each open sequence.
    indices: Vec<usize>,
    /// The last map key seen, for the value that follows it.
    key: Option<String>,
}

impl Walker {
    fn float(&self, v: f64) -> Result<(), Error> {
        if v.is_finite() {
            return Ok(());
        }
        let at = if self.path.is_empty() {
            "the value".to_string()
        } else {
            self.path.concat().trim_start_matches('.').to_string()
        };
        Err(ser::Error::custom(format!(
            "{at} is {v}, which JSON cannot hold (it would be written as null and not read back)"
        )))
    }

    fn nested<T: Serialize + ?Sized>(&mut self, part: String, value: &T) -> Result<(), Error> {
        self.path.push(part);
        let r = value.serialize(&mut *self);
        self.path.pop();
        r
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let i = self.indices.last().copied().unwrap_or(0);
        if let Some(last) = self.indices.last_mut() {
            *last += 1;
        }
        self.nested(format!("[{i}]"), value)
    }

    fn field<T: Serialize + ?Sized>(&mut self, name: &str, value: &T) -> Result<(), Error> {
        self.nested(format!(".{name}"), value)
    }
}

macro_rules! accept {
    ($($method:ident: $ty:ty),* $(,)?) => {
        $(fn $method(self, _: $ty) -> Result<(), Error> { Ok(()) })*
    };
}

impl ser::Serializer for &mut Walker {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    accept!(
        serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_i128: i128, serialize_u8: u8, serialize_u16: u16,
        serialize_u32: u32, serialize_u64: u64, serialize_u128: u128, serialize_char: char,
        serialize_str: &str, serialize_bytes: &[u8], serialize_unit_struct: &'static str,
    );

    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        self.float(f64::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        self.float(v)
    }
    fn serialize_none(self) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.field(variant, value)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self, Error> {
        self.indices.push(0);
        Ok(self)
    }
    fn serialize_tuple(self, len: usize) -> Result<Self, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<Self, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self, Error> {
        self.path.push(format!(".{variant}"));
        self.serialize_seq(Some(len))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self, Error> {
        Ok(self)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Error> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self, Error> {
        self.path.push(format!(".{variant}"));
        Ok(self)
    }
    fn collect_str<T: Display + ?Sized>(self, _: &T) -> Result<(), Error> {
        Ok(())
    }
}

impl ser::SerializeSeq for &mut Walker {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    fn end(self) -> Result<(), Error> {
        self.indices.pop();
        Ok(())
    }
}

impl ser::SerializeTuple for &mut Walker {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    fn end(self) -> Result<(), Error> {
        self.indices.pop();
        Ok(())
    }
}

impl ser::SerializeTupleStruct for &mut Walker {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    fn end(self) -> Result<(), Error> {
        self.indices.pop();
        Ok(())
    }
}

impl ser::SerializeTupleVariant for &mut Walker {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    fn end(self) -> Result<(), Error> {
        self.indices.pop();
        self.path.pop();
        Ok(())
    }
}

impl ser::SerializeMap for &mut Walker {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        // Keys name the path only; a key that is not a plain string is shown as JSON.
        self.key = Some(match serde_json::to_value(key) {
            Ok(serde_json::Value::String(s)) => s,
            Ok(other) => other.to_string(),
            Err(_) => "?".to_string(),
        });
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let key = self.key.take().unwrap_or_default();
        self.field(&key, value)
    }
    fn end(self) -> Result<(), Error> {
        Ok(())
    }
}

impl ser::SerializeStruct for &mut Walker {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.field(name, value)
    }
    fn end(self) -> Result<(), Error> {
        Ok(())
    }
}

impl ser::SerializeStructVariant for &mut Walker {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.field(name, value)
    }
    fn end(self) -> Result<(), Error> {
        self.path.pop();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    struct Log {
        epoch: usize,
        loss: f64,
        extra: Option<f32>,
    }

    #[derive(serde::Serialize)]
    struct State {
        name: String,
        history: Vec<Log>,
        by_name: std::collections::BTreeMap<String, (f32, f32)>,
    }

    fn state(loss: f64, pair: (f32, f32)) -> State {
        State {
            name: "run".into(),
            history: vec![
                Log {
                    epoch: 1,
                    loss: 1.0,
                    extra: None,
                },
                Log {
                    epoch: 2,
                    loss,
                    extra: Some(0.5),
                },
            ],
            by_name: [("ada".to_string(), pair)].into_iter().collect(),
        }
    }

    #[test]
    fn finite_values_pass_and_match_serde_json() {
        let s = state(0.25, (0.1, 0.2));
        assert_eq!(
            to_string_pretty(&s).unwrap(),
            serde_json::to_string_pretty(&s).unwrap()
        );
        assert_eq!(to_value(&s).unwrap()["history"][1]["loss"], 0.25);
        check_finite(&serde_json::json!({"a": [1, 2.5, null, "x"]})).unwrap();
    }

    #[test]
    fn non_finite_values_are_refused_with_their_path() {
        let e = to_string_pretty(&state(f64::NAN, (0.1, 0.2))).unwrap_err();
        assert!(e.to_string().contains("history[1].loss is NaN"), "{e}");
        let e = check_finite(&state(1.0, (0.1, f32::INFINITY))).unwrap_err();
        assert!(e.to_string().contains("by_name.ada[1] is inf"), "{e}");
        let e = to_value(&f64::NEG_INFINITY).unwrap_err();
        assert!(e.to_string().contains("the value is -inf"), "{e}");
        assert!(to_string(&[Some(1.0), Some(f32::NAN)]).is_err());
    }
}
