//! The in-memory user directory behind the baseline's `users.UserService`.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use baseline::pb::{CreateUserRequest, User};

/// Users in insertion order, indexed by id.
#[derive(Debug, Default)]
pub(crate) struct Store {
    users: Vec<User>,
    by_id: HashMap<String, usize>,
}

impl Store {
    /// A store holding only the fixed user the benchmarks read: `bench-user`.
    pub(crate) fn seeded() -> Self {
        let mut store = Self::default();
        store.insert(User {
            id: "bench-user".to_owned(),
            name: "Bench".to_owned(),
            email: "bench@example.com".to_owned(),
            age: 30,
            created_at: 0,
        });
        store
    }

    pub(crate) fn get(&self, id: &str) -> Option<&User> {
        self.by_id.get(id).map(|&i| &self.users[i])
    }

    pub(crate) fn insert(&mut self, user: User) {
        self.by_id.insert(user.id.clone(), self.users.len());
        self.users.push(user);
    }

    /// Up to `limit` users in insertion order, starting after the user `after`
    /// (from the start when `after` is empty). `None` when `after` is not a known id.
    pub(crate) fn page(&self, after: &str, limit: usize) -> Option<&[User]> {
        let start = if after.is_empty() { 0 } else { self.by_id.get(after)? + 1 };
        let end = start.saturating_add(limit).min(self.users.len());
        Some(&self.users[start..end])
    }
}

/// The email rule of the seed schema (`this.contains('@')`): an empty email fails too.
pub(crate) fn valid_email(email: &str) -> bool {
    email.contains('@')
}

/// A new user from a (validated) request: UUID v4 id, created now.
pub(crate) fn new_user(req: CreateUserRequest) -> User {
    User {
        id: uuid::Uuid::new_v4().to_string(),
        name: req.name,
        email: req.email,
        age: req.age,
        created_at: unix_now(),
    }
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> User {
        User { id: id.to_owned(), ..User::default() }
    }

    #[test]
    fn pages_continue_after_the_token() {
        let mut store = Store::default();
        for id in ["a", "b", "c", "d"] {
            store.insert(user(id));
        }
        let ids = |page: &[User]| page.iter().map(|u| u.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(store.page("", 3).unwrap()), ["a", "b", "c"]);
        assert_eq!(ids(store.page("c", 3).unwrap()), ["d"]);
        assert!(store.page("d", 3).unwrap().is_empty());
        assert!(store.page("zz", 3).is_none());
    }

    #[test]
    fn email_needs_an_at_sign() {
        assert!(valid_email("a@b"));
        assert!(!valid_email("ab"));
        assert!(!valid_email(""));
    }
}
