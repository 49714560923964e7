//! How a document is written on the wire — `{id, path, version, createTime,
//! updateTime, data}` around the stored JSON text, without re-parsing it —
//! shared by REST responses and realtime frames, so both render alike.

use std::fmt::Write as _;

use crate::clock::write_time;
use crate::store::documents::StoredDoc;

/// Appends `text` JSON-escaped, without quotes.
pub fn write_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// Appends `{id, path, version, createTime, updateTime, data}` around the stored JSON text.
pub fn write_document(out: &mut String, collection: &str, stored: &StoredDoc) {
    out.push_str("{\"id\":\"");
    write_escaped(out, &stored.id);
    out.push_str("\",\"path\":\"");
    write_escaped(out, collection);
    out.push('/');
    write_escaped(out, &stored.id);
    let _ = write!(out, "\",\"version\":{},\"createTime\":\"", stored.version);
    write_time(out, stored.create_time);
    out.push_str("\",\"updateTime\":\"");
    write_time(out, stored.update_time);
    out.push_str("\",\"data\":");
    out.push_str(&stored.data);
    out.push('}');
}

pub fn render_document(collection: &str, stored: &StoredDoc) -> String {
    let mut out = String::with_capacity(stored.data.len() + 160);
    write_document(&mut out, collection, stored);
    out
}
