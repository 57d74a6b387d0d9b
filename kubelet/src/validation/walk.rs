//! Every field of a k8s-openapi type, read off its generated `Deserialize` impl: each struct
//! asks its deserializer for `deserialize_struct(name, FIELDS, visitor)` with its JSON field
//! names, so a deserializer that records those names and feeds each field a value of the shape
//! it asks for walks the whole type, and a field a newer API adds shows up by itself.
//! Test-only: `fields_tests` checks each field against the table in `fields.rs`.

use serde::de::value::{Error, StrDeserializer};
use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess};
use serde::forward_to_deserialize_any;

/// What a node of the walk holds, from the deserializer call its type made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Bool,
    Int,
    Str,
    /// `deserialize_any`: `IntOrString`, the value of a `Quantity`.
    Any,
    Map,
    Seq,
    Struct,
}

/// One node: `spec.containers[*].securityContext.procMount`, with its shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub path: String,
    pub shape: Shape,
}

/// The nodes of `T` below `root` (depth-first, in the type's field order).
pub(crate) fn walk<'de, T: serde::Deserialize<'de>>(root: &str) -> Vec<Node> {
    let mut out = Vec::new();
    let w = Walker {
        path: root.to_owned(),
        depth: 0,
        out: &mut out,
    };
    if let Err(e) = T::deserialize(w) {
        panic!("walking {root}: {e}");
    }
    out
}

/// The fields of a walk that have no field below them: what the table must cover. Elements
/// (`command[*]`) are not fields: `command` is the field.
pub(crate) fn leaf_fields(nodes: &[Node]) -> Vec<&Node> {
    let fields: Vec<&Node> = nodes.iter().filter(|n| !n.path.ends_with("[*]")).collect();
    fields
        .iter()
        .filter(|n| {
            !fields.iter().any(|m| {
                m.path.len() > n.path.len()
                    && m.path.starts_with(&n.path)
                    && m.path[n.path.len()..].starts_with(['.', '['])
            })
        })
        .copied()
        .collect()
}

/// A type nested deeper than this is a recursive type, which no pod type is.
const MAX_DEPTH: usize = 40;

struct Walker<'a> {
    path: String,
    depth: usize,
    out: &'a mut Vec<Node>,
}

impl Walker<'_> {
    fn record(&mut self, shape: Shape) {
        self.out.push(Node {
            path: self.path.clone(),
            shape,
        });
    }

    fn child(&mut self, suffix: &str) -> Result<Walker<'_>, Error> {
        if self.depth >= MAX_DEPTH {
            return Err(de::Error::custom(format!(
                "{} is nested more than {MAX_DEPTH} deep",
                self.path
            )));
        }
        Ok(Walker {
            path: format!("{}{suffix}", self.path),
            depth: self.depth + 1,
            out: &mut *self.out,
        })
    }
}

impl<'de> Deserializer<'de> for Walker<'_> {
    type Error = Error;

    fn deserialize_any<V: de::Visitor<'de>>(mut self, v: V) -> Result<V::Value, Error> {
        self.record(Shape::Any);
        v.visit_str("1")
    }
    fn deserialize_bool<V: de::Visitor<'de>>(mut self, v: V) -> Result<V::Value, Error> {
        self.record(Shape::Bool);
        v.visit_bool(false)
    }
    fn deserialize_i32<V: de::Visitor<'de>>(mut self, v: V) -> Result<V::Value, Error> {
        self.record(Shape::Int);
        v.visit_i32(0)
    }
    fn deserialize_i64<V: de::Visitor<'de>>(mut self, v: V) -> Result<V::Value, Error> {
        self.record(Shape::Int);
        v.visit_i64(0)
    }
    fn deserialize_f64<V: de::Visitor<'de>>(mut self, v: V) -> Result<V::Value, Error> {
        self.record(Shape::Int);
        v.visit_f64(0.0)
    }
    fn deserialize_str<V: de::Visitor<'de>>(mut self, v: V) -> Result<V::Value, Error> {
        self.record(Shape::Str);
        // A time parses from this too (`Time` wraps a timestamp).
        v.visit_str("2000-01-01T00:00:00Z")
    }
    fn deserialize_string<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.deserialize_str(v)
    }
    fn deserialize_option<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_some(self)
    }
    fn deserialize_newtype_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, Error> {
        v.visit_newtype_struct(self)
    }
    fn deserialize_seq<V: de::Visitor<'de>>(mut self, v: V) -> Result<V::Value, Error> {
        self.record(Shape::Seq);
        v.visit_seq(OneElement(Some(self.child("[*]")?)))
    }
    fn deserialize_map<V: de::Visitor<'de>>(mut self, v: V) -> Result<V::Value, Error> {
        // Maps in pod types hold strings or quantities: a leaf, given empty.
        self.record(Shape::Map);
        v.visit_map(Fields {
            parent: self,
            fields: &[],
            next: 0,
        })
    }
    fn deserialize_struct<V: de::Visitor<'de>>(
        mut self,
        _name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        self.record(Shape::Struct);
        v.visit_map(Fields {
            parent: self,
            fields,
            next: 0,
        })
    }

    forward_to_deserialize_any! {
        i8 i16 u8 u16 u32 u64 f32 char bytes byte_buf unit unit_struct tuple
        tuple_struct enum identifier ignored_any
    }
}

/// The one element of every list.
struct OneElement<'a>(Option<Walker<'a>>);

impl<'de> SeqAccess<'de> for OneElement<'_> {
    type Error = Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        self.0.take().map(|w| seed.deserialize(w)).transpose()
    }
}

/// A struct's fields, each given once, in order.
struct Fields<'a> {
    parent: Walker<'a>,
    fields: &'static [&'static str],
    next: usize,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(name) = self.fields.get(self.next) else {
            return Ok(None);
        };
        let key: StrDeserializer<'_, Error> = name.into_deserializer();
        seed.deserialize(key).map(Some)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let name = self.fields[self.next];
        self.next += 1;
        seed.deserialize(self.parent.child(&format!(".{name}"))?)
    }
}
