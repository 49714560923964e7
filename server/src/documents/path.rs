//! Document and collection paths (`posts/p1/comments/c1`), parsed once at the
//! edge: segments are non-empty, at most 256 bytes, never `.` or `..`, hold no
//! `/` or control characters, and a path has at most 64 segments and 1024
//! bytes, so an id can never escape its collection.

use std::fmt;

pub const MAX_SEGMENTS: usize = 64;
pub const MAX_PATH_BYTES: usize = 1024;
pub const MAX_SEGMENT_BYTES: usize = 256;

/// A parsed path: an odd number of segments names a collection, an even number a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyPath {
    Collection(CollectionPath),
    Document(DocPath),
}

/// `posts` or `posts/p1/comments`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CollectionPath(String);

/// `posts/p1` or `posts/p1/comments/c1`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DocPath {
    collection: CollectionPath,
    id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid path: {0}")]
pub struct PathError(pub String);

impl AnyPath {
    pub fn parse(text: &str) -> Result<AnyPath, PathError> {
        let text = text.trim_matches('/');
        if text.is_empty() {
            return Err(PathError("the path is empty".into()));
        }
        if text.len() > MAX_PATH_BYTES {
            return Err(PathError(format!("longer than {MAX_PATH_BYTES} bytes")));
        }
        let segments: Vec<&str> = text.split('/').collect();
        if segments.len() > MAX_SEGMENTS {
            return Err(PathError(format!("more than {MAX_SEGMENTS} segments")));
        }
        for segment in &segments {
            check_segment(segment)?;
        }
        Ok(if segments.len() % 2 == 1 {
            AnyPath::Collection(CollectionPath(text.to_owned()))
        } else {
            let (collection, id) = text.rsplit_once('/').unwrap_or(("", text));
            AnyPath::Document(DocPath { collection: CollectionPath(collection.to_owned()), id: id.to_owned() })
        })
    }
}

/// Checks one segment (a collection name or a document id).
pub fn check_segment(segment: &str) -> Result<(), PathError> {
    if segment.is_empty() {
        return Err(PathError("empty segment (\"//\")".into()));
    }
    if segment == "." || segment == ".." {
        return Err(PathError("\".\" and \"..\" are not allowed as segments".into()));
    }
    if segment.len() > MAX_SEGMENT_BYTES {
        return Err(PathError(format!("a segment is longer than {MAX_SEGMENT_BYTES} bytes")));
    }
    if segment.chars().any(char::is_control) {
        return Err(PathError("control characters are not allowed".into()));
    }
    if segment.starts_with("__") && segment.ends_with("__") {
        return Err(PathError("segments of the form __name__ are reserved".into()));
    }
    Ok(())
}

impl CollectionPath {
    pub fn parse(text: &str) -> Result<CollectionPath, PathError> {
        match AnyPath::parse(text)? {
            AnyPath::Collection(c) => Ok(c),
            AnyPath::Document(_) => Err(PathError(format!("{:?} names a document, not a collection", text))),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The document `id` in this collection.
    pub fn doc(&self, id: &str) -> Result<DocPath, PathError> {
        check_segment(id)?;
        if self.0.len() + 1 + id.len() > MAX_PATH_BYTES {
            return Err(PathError(format!("longer than {MAX_PATH_BYTES} bytes")));
        }
        Ok(DocPath { collection: self.clone(), id: id.to_owned() })
    }
}

impl DocPath {
    pub fn parse(text: &str) -> Result<DocPath, PathError> {
        match AnyPath::parse(text)? {
            AnyPath::Document(d) => Ok(d),
            AnyPath::Collection(_) => Err(PathError(format!("{:?} names a collection, not a document", text))),
        }
    }

    pub fn collection(&self) -> &CollectionPath {
        &self.collection
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Display for CollectionPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for DocPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.collection, self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_paths_are_collections_and_even_paths_documents() {
        assert!(matches!(AnyPath::parse("posts"), Ok(AnyPath::Collection(_))));
        let doc = DocPath::parse("posts/p1/comments/c1").unwrap();
        assert_eq!((doc.collection().as_str(), doc.id()), ("posts/p1/comments", "c1"));
        assert_eq!(doc.to_string(), "posts/p1/comments/c1");
    }

    #[test]
    fn paths_cannot_escape_their_collection() {
        for bad in ["posts/..", "posts/.", "posts//x", "a/b\u{0}c", "posts/__name__", "", "/"] {
            assert!(AnyPath::parse(bad).is_err(), "{bad:?} must be refused");
        }
        let posts = CollectionPath::parse("posts").unwrap();
        assert!(posts.doc("..").is_err());
        assert!(posts.doc(&"x".repeat(300)).is_err());
        assert!(AnyPath::parse(&"a/".repeat(70)).is_err());
    }
}
