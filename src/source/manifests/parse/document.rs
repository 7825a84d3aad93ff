//! One YAML or JSON document, read so that a large `List` never exists as one tree.
//!
//! Parsing a document into a `serde_json::Value` and then decoding it costs the whole tree at
//! once: for a 50 MB `kind: List` that was 1.4-1.8 GiB (every string, map and array node of
//! every item, alive until the last item was decoded). Here each item of `items` is parsed
//! and decoded into its typed object before the next one is read, so a List costs its objects
//! and one item's tree. Documents that are not Lists are small and are still read whole.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::{Decoded, decode};

/// A document: a List (`kind` ending in `List`, `items` an array) and its decoded items, or
/// anything else, as a value.
pub(super) enum Document {
    /// The decoded items of a List, in order.
    List(Vec<Decoded>),
    /// Any other document (a mapping without its `items`, which no kind Portico reads has, or
    /// a scalar or sequence, which [`decode`] reports).
    Other(Value),
}

impl<'de> Deserialize<'de> for Document {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DocumentVisitor)
    }
}

struct DocumentVisitor;

impl<'de> Visitor<'de> for DocumentVisitor {
    type Value = Document;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML or JSON document")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
        let mut fields = Map::new();
        let mut items = None;
        while let Some(key) = map.next_key::<String>()? {
            if key != "items" {
                let value = map.next_value::<Value>()?;
                fields.insert(key, value);
            } else if kind(&fields).is_some_and(|k| !k.ends_with("List")) {
                // Not a List: its items are nothing to Portico.
                map.next_value::<IgnoredAny>()?;
                items = None;
            } else {
                // A List, or the kind comes later: decode them as items (dropped below if the
                // document turns out not to be a List).
                items = map.next_value::<Items>()?.0;
            }
        }
        match items {
            Some(items) if kind(&fields).is_some_and(|k| k.ends_with("List")) => {
                Ok(Document::List(items))
            }
            _ => Ok(Document::Other(Value::Object(fields))),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Document, A::Error> {
        Value::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(Document::Other)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Document, E> {
        Ok(Document::Other(v.into()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Document, E> {
        Ok(Document::Other(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Document, E> {
        Ok(Document::Other(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Document, E> {
        Ok(Document::Other(v.into()))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Document, E> {
        Ok(Document::Other(v.into()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Document, E> {
        Ok(Document::Other(Value::Null))
    }

    fn visit_none<E: de::Error>(self) -> Result<Document, E> {
        Ok(Document::Other(Value::Null))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Document, D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// The `kind` field read so far, when it is a string.
fn kind(fields: &Map<String, Value>) -> Option<&str> {
    fields.get("kind").and_then(Value::as_str)
}

/// The `items` of a document: each decoded as soon as it is parsed; `None` when `items` is
/// not an array.
struct Items(Option<Vec<Decoded>>);

impl<'de> Deserialize<'de> for Items {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ItemsVisitor)
    }
}

struct ItemsVisitor;

impl<'de> Visitor<'de> for ItemsVisitor {
    type Value = Items;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Items, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element::<Value>()? {
            items.push(decode(item));
        }
        Ok(Items(Some(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Items, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Items(None))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Items, E> {
        Ok(Items(None))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Items, E> {
        Ok(Items(None))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Items, E> {
        Ok(Items(None))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Items, E> {
        Ok(Items(None))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Items, E> {
        Ok(Items(None))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Items, E> {
        Ok(Items(None))
    }

    fn visit_none<E: de::Error>(self) -> Result<Items, E> {
        Ok(Items(None))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Items, D::Error> {
        deserializer.deserialize_any(self)
    }
}
