//! `Swap<T>`: a value that is read often and replaced whole now and then
//! (the rules in force, the functions registry, trigger tables, schedules).
//! Readers take a cheap `Arc` of the current value and keep using it while a
//! writer puts a new one in place. A panic while the lock was held cannot
//! leave a half-written value (the slot only ever holds a whole `Arc`), so a
//! poisoned lock is simply used again.

use std::sync::{Arc, RwLock};

pub struct Swap<T>(Arc<RwLock<Arc<T>>>);

impl<T> Clone for Swap<T> {
    fn clone(&self) -> Self {
        Swap(self.0.clone())
    }
}

impl<T: Default> Default for Swap<T> {
    fn default() -> Self {
        Swap::new(T::default())
    }
}

impl<T> Swap<T> {
    pub fn new(value: T) -> Swap<T> {
        Swap(Arc::new(RwLock::new(Arc::new(value))))
    }

    /// The current value.
    pub fn load(&self) -> Arc<T> {
        self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Puts `value` in place of the current one.
    pub fn store(&self, value: T) {
        *self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_keep_what_they_loaded() {
        let cell = Swap::new(1);
        let before = cell.load();
        cell.clone().store(2);
        assert_eq!((*before, *cell.load()), (1, 2));
    }
}
