//! Canonical JSON straight from any `Serialize` value, without building a
//! `serde_json::Value` first.
//!
//! The output is byte for byte what [`super::write_canonical`] writes for
//! `serde_json::to_value(value)`: the publisher's hot path used to pay for
//! that tree (a `String` per key, a node per value) on every message. Object
//! entries are written in place while their keys arrive in ascending order
//! (a `Value`'s map, or a struct whose fields are declared in order); an
//! object whose keys arrive out of order is re-sorted once it is complete.
//!
//! Anything this writer does not reproduce exactly (map keys other than
//! strings, chars and integers) is reported as [`Unsupported`], and the
//! caller takes the `to_value` road instead.

use serde::ser::{self, Serialize};
use std::ops::Range;

/// The value needs `serde_json::to_value`'s rules (or is not JSON at all).
#[derive(Debug)]
pub struct Unsupported(String);

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unsupported {}

impl ser::Error for Unsupported {
    fn custom<T: std::fmt::Display>(msg: T) -> Unsupported {
        Unsupported(msg.to_string())
    }
}

/// The struct name `serde_json` gives an `arbitrary_precision` number.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// Appends the canonical form of `value` to `out`. On error `out` is left
/// as it was.
pub fn write_serialize<T: Serialize + ?Sized>(
    out: &mut String,
    value: &T,
) -> Result<(), Unsupported> {
    let start = out.len();
    let result = value.serialize(Canon { out: &mut *out });
    if result.is_err() {
        out.truncate(start);
    }
    result
}

struct Canon<'a> {
    out: &'a mut String,
}

fn unsupported<T>(what: &str) -> Result<T, Unsupported> {
    Err(Unsupported(format!("{what} is not written directly")))
}

impl Canon<'_> {
    fn integer(self, negative: bool, magnitude: u128) -> Result<(), Unsupported> {
        match u64::try_from(magnitude) {
            Ok(small) => super::push_integer(self.out, negative && small != 0, small),
            Err(_) => {
                if negative {
                    self.out.push('-');
                }
                self.out.push_str(&magnitude.to_string());
            }
        }
        Ok(())
    }
}

impl<'a> ser::Serializer for Canon<'a> {
    type Ok = ();
    type Error = Unsupported;
    type SerializeSeq = Array<'a>;
    type SerializeTuple = Array<'a>;
    type SerializeTupleStruct = Array<'a>;
    type SerializeTupleVariant = Array<'a>;
    type SerializeMap = Object<'a>;
    type SerializeStruct = Object<'a>;
    type SerializeStructVariant = Object<'a>;

    fn serialize_bool(self, v: bool) -> Result<(), Unsupported> {
        self.out.push_str(if v { "true" } else { "false" });
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), Unsupported> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i16(self, v: i16) -> Result<(), Unsupported> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i32(self, v: i32) -> Result<(), Unsupported> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i64(self, v: i64) -> Result<(), Unsupported> {
        self.integer(v < 0, u128::from(v.unsigned_abs()))
    }
    fn serialize_i128(self, v: i128) -> Result<(), Unsupported> {
        self.integer(v < 0, v.unsigned_abs())
    }
    fn serialize_u8(self, v: u8) -> Result<(), Unsupported> {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u16(self, v: u16) -> Result<(), Unsupported> {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u32(self, v: u32) -> Result<(), Unsupported> {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u64(self, v: u64) -> Result<(), Unsupported> {
        self.integer(false, u128::from(v))
    }
    fn serialize_u128(self, v: u128) -> Result<(), Unsupported> {
        self.integer(false, v)
    }
    fn serialize_f32(self, v: f32) -> Result<(), Unsupported> {
        // `to_value` keeps an f32's shortest decimal form ("0.1", not
        // 0.10000000149011612) and turns NaN and infinities into null.
        if !v.is_finite() {
            return self.serialize_unit();
        }
        let shortest: f64 = v.to_string().parse().unwrap_or(f64::from(v));
        self.serialize_f64(shortest)
    }
    fn serialize_f64(self, v: f64) -> Result<(), Unsupported> {
        if !v.is_finite() {
            return self.serialize_unit();
        }
        super::write_float(self.out, v);
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), Unsupported> {
        let mut buffer = [0u8; 4];
        self.serialize_str(v.encode_utf8(&mut buffer))
    }
    fn serialize_str(self, v: &str) -> Result<(), Unsupported> {
        super::write_string(self.out, v);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Unsupported> {
        use ser::SerializeSeq as _;
        let mut array = self.serialize_seq(Some(v.len()))?;
        for byte in v {
            array.serialize_element(byte)?;
        }
        array.end()
    }
    fn serialize_none(self) -> Result<(), Unsupported> {
        self.serialize_unit()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Unsupported> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Unsupported> {
        self.out.push_str("null");
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Unsupported> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Unsupported> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Unsupported> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Unsupported> {
        use ser::SerializeMap as _;
        let mut object = self.serialize_map(Some(1))?;
        object.serialize_entry(variant, value)?;
        object.end()
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Array<'a>, Unsupported> {
        self.out.push('[');
        Ok(Array {
            out: self.out,
            first: true,
            wrapped: false,
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<Array<'a>, Unsupported> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Array<'a>, Unsupported> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Array<'a>, Unsupported> {
        // {"variant":[...]}
        self.out.push('{');
        super::write_string(self.out, variant);
        self.out.push_str(":[");
        Ok(Array {
            out: self.out,
            first: true,
            wrapped: true,
        })
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Object<'a>, Unsupported> {
        Ok(Object::open(self))
    }
    fn serialize_struct(self, name: &'static str, _len: usize) -> Result<Object<'a>, Unsupported> {
        if name == NUMBER_TOKEN {
            // An `arbitrary_precision` number: its text comes as the one
            // field, and is written by the same rules as a parsed one.
            return Ok(Object::number(self));
        }
        Ok(Object::open(self))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Object<'a>, Unsupported> {
        // {"variant":{...}}
        self.out.push('{');
        super::write_string(self.out, variant);
        self.out.push(':');
        let mut object = Object::open(self);
        object.wrapped = true;
        Ok(object)
    }
}

/// An array being written.
pub struct Array<'a> {
    out: &'a mut String,
    first: bool,
    /// Inside `{"variant":…}`, closed with the array.
    wrapped: bool,
}

impl Array<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unsupported> {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        value.serialize(Canon { out: self.out })
    }

    fn close(self) -> Result<(), Unsupported> {
        self.out.push(']');
        if self.wrapped {
            self.out.push('}');
        }
        Ok(())
    }
}

impl ser::SerializeSeq for Array<'_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unsupported> {
        self.element(value)
    }
    fn end(self) -> Result<(), Unsupported> {
        self.close()
    }
}

impl ser::SerializeTuple for Array<'_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unsupported> {
        self.element(value)
    }
    fn end(self) -> Result<(), Unsupported> {
        self.close()
    }
}

impl ser::SerializeTupleStruct for Array<'_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unsupported> {
        self.element(value)
    }
    fn end(self) -> Result<(), Unsupported> {
        self.close()
    }
}

impl ser::SerializeTupleVariant for Array<'_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unsupported> {
        self.element(value)
    }
    fn end(self) -> Result<(), Unsupported> {
        self.close()
    }
}

/// An object being written: entries go straight to the output while their
/// keys ascend; otherwise they are sorted (the last of equal keys kept, as
/// a `Value` map keeps it) when the object ends.
pub struct Object<'a> {
    out: &'a mut String,
    /// Where the first entry starts (just after `{`).
    start: usize,
    /// Every key as it was given, one after the other.
    keys: String,
    /// Each entry's key (in `keys`) and its `"key":value` text (in `out`).
    entries: Vec<(Range<usize>, Range<usize>)>,
    in_order: bool,
    /// Inside `{"variant":…}`, closed with the object.
    wrapped: bool,
    /// An `arbitrary_precision` number rather than an object.
    number: bool,
}

impl<'a> Object<'a> {
    fn open(canon: Canon<'a>) -> Object<'a> {
        canon.out.push('{');
        let start = canon.out.len();
        Object {
            out: canon.out,
            start,
            keys: String::new(),
            entries: Vec::new(),
            in_order: true,
            wrapped: false,
            number: false,
        }
    }

    fn number(canon: Canon<'a>) -> Object<'a> {
        let start = canon.out.len();
        Object {
            out: canon.out,
            start,
            keys: String::new(),
            entries: Vec::new(),
            in_order: true,
            wrapped: false,
            number: true,
        }
    }

    /// Starts an entry whose key is `key` (unescaped).
    fn key(&mut self, key: &str) {
        let from = self.keys.len();
        self.keys.push_str(key);
        let range = from..self.keys.len();
        if let Some((last, _)) = self.entries.last() {
            // Strictly ascending, or the object needs sorting (equal keys
            // included: only the last one stays).
            if self.in_order && self.keys[last.clone()] >= self.keys[range.clone()] {
                self.in_order = false;
            }
        }
        let entry_start = self.out.len();
        if !self.entries.is_empty() {
            self.out.push(',');
        }
        super::write_string(self.out, key);
        self.out.push(':');
        self.entries.push((range, entry_start..entry_start));
    }

    fn value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unsupported> {
        value.serialize(Canon { out: self.out })?;
        let end = self.out.len();
        if let Some((_, text)) = self.entries.last_mut() {
            text.end = end;
        }
        Ok(())
    }

    fn close(self) -> Result<(), Unsupported> {
        if self.number {
            return Ok(());
        }
        if !self.in_order {
            let written = self.out.split_off(self.start);
            let mut order: Vec<usize> = (0..self.entries.len()).collect();
            // Stable: equal keys keep their order, and the last one wins.
            order.sort_by(|a, b| {
                self.keys[self.entries[*a].0.clone()].cmp(&self.keys[self.entries[*b].0.clone()])
            });
            let mut first = true;
            for (position, index) in order.iter().enumerate() {
                let key = &self.keys[self.entries[*index].0.clone()];
                if let Some(next) = order.get(position + 1) {
                    if &self.keys[self.entries[*next].0.clone()] == key {
                        continue;
                    }
                }
                let text = self.entries[*index].1.clone();
                let piece = &written[text.start - self.start..text.end - self.start];
                let piece = piece.strip_prefix(',').unwrap_or(piece);
                if !first {
                    self.out.push(',');
                }
                first = false;
                self.out.push_str(piece);
            }
        }
        self.out.push('}');
        if self.wrapped {
            self.out.push('}');
        }
        Ok(())
    }
}

impl ser::SerializeMap for Object<'_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Unsupported> {
        let key = key.serialize(KeyText)?;
        self.key(&key);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unsupported> {
        self.value(value)
    }
    fn end(self) -> Result<(), Unsupported> {
        self.close()
    }
}

impl ser::SerializeStruct for Object<'_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Unsupported> {
        if self.number {
            // The number's text, as `serde_json` parsed or formatted it.
            let text = value.serialize(KeyText)?;
            let number: serde_json::Number = text
                .parse()
                .map_err(|_| Unsupported(format!("not a number: {text}")))?;
            super::write_number(self.out, &number);
            return Ok(());
        }
        self.key(key);
        self.value(value)
    }
    fn end(self) -> Result<(), Unsupported> {
        self.close()
    }
}

impl ser::SerializeStructVariant for Object<'_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Unsupported> {
        self.key(key);
        self.value(value)
    }
    fn end(self) -> Result<(), Unsupported> {
        self.close()
    }
}

/// An object key (or a number's text) as `to_value` would spell it:
/// strings and chars as they are, integers in decimal.
struct KeyText;

impl ser::Serializer for KeyText {
    type Ok = String;
    type Error = Unsupported;
    type SerializeSeq = ser::Impossible<String, Unsupported>;
    type SerializeTuple = ser::Impossible<String, Unsupported>;
    type SerializeTupleStruct = ser::Impossible<String, Unsupported>;
    type SerializeTupleVariant = ser::Impossible<String, Unsupported>;
    type SerializeMap = ser::Impossible<String, Unsupported>;
    type SerializeStruct = ser::Impossible<String, Unsupported>;
    type SerializeStructVariant = ser::Impossible<String, Unsupported>;

    fn serialize_str(self, v: &str) -> Result<String, Unsupported> {
        Ok(v.to_owned())
    }
    fn serialize_char(self, v: char) -> Result<String, Unsupported> {
        Ok(v.to_string())
    }
    fn serialize_i8(self, v: i8) -> Result<String, Unsupported> {
        Ok(v.to_string())
    }
    fn serialize_i16(self, v: i16) -> Result<String, Unsupported> {
        Ok(v.to_string())
    }
    fn serialize_i32(self, v: i32) -> Result<String, Unsupported> {
        Ok(v.to_string())
    }
    fn serialize_i64(self, v: i64) -> Result<String, Unsupported> {
        Ok(v.to_string())
    }
    fn serialize_i128(self, v: i128) -> Result<String, Unsupported> {
        Ok(v.to_string())
    }
    fn serialize_u8(self, v: u8) -> Result<String, Unsupported> {
        Ok(v.to_string())
    }
    fn serialize_u16(self, v: u16) -> Result<String, Unsupported> {
        Ok(v.to_string())
    }
    fn serialize_u32(self, v: u32) -> Result<String, Unsupported> {
        Ok(v.to_string())
    }
    fn serialize_u64(self, v: u64) -> Result<String, Unsupported> {
        Ok(v.to_string())
    }
    fn serialize_u128(self, v: u128) -> Result<String, Unsupported> {
        Ok(v.to_string())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<String, Unsupported> {
        value.serialize(self)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<String, Unsupported> {
        Ok(variant.to_owned())
    }
    fn serialize_bool(self, _v: bool) -> Result<String, Unsupported> {
        unsupported("a bool key")
    }
    fn serialize_f32(self, _v: f32) -> Result<String, Unsupported> {
        unsupported("a float key")
    }
    fn serialize_f64(self, _v: f64) -> Result<String, Unsupported> {
        unsupported("a float key")
    }
    fn serialize_bytes(self, _v: &[u8]) -> Result<String, Unsupported> {
        unsupported("a bytes key")
    }
    fn serialize_none(self) -> Result<String, Unsupported> {
        unsupported("an optional key")
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _value: &T) -> Result<String, Unsupported> {
        unsupported("an optional key")
    }
    fn serialize_unit(self) -> Result<String, Unsupported> {
        unsupported("a unit key")
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<String, Unsupported> {
        unsupported("a unit key")
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<String, Unsupported> {
        unsupported("an enum key")
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, Unsupported> {
        unsupported("a sequence key")
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, Unsupported> {
        unsupported("a tuple key")
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, Unsupported> {
        unsupported("a tuple key")
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, Unsupported> {
        unsupported("an enum key")
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, Unsupported> {
        unsupported("a map key")
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, Unsupported> {
        unsupported("a struct key")
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, Unsupported> {
        unsupported("an enum key")
    }
}
