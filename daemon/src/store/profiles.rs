//! Customers' profiles: what the HTTP API keeps about a customer beyond its counters (email,
//! name, metadata), as opaque bytes by customer id. A profile may exist before the customer has
//! a plan. Written on their own, synced, outside the commit log: they carry no money.

use fjall::PersistMode;

use super::{Store, StoreError};

impl Store {
    /// Writes `customer`'s profile and syncs it before returning.
    pub fn put_profile(&self, customer: &str, profile: &[u8]) -> Result<(), StoreError> {
        if self.faults.is_failing() {
            return Err(StoreError::InjectedFault);
        }
        self.profiles.insert(customer, profile)?;
        self.db.persist(PersistMode::SyncData)?;
        Ok(())
    }

    /// `customer`'s profile, if one was written.
    pub fn profile(&self, customer: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.profiles.get(customer)?.map(|value| value.to_vec()))
    }

    /// Up to `limit` profiles in id order, starting after `after` (from the first without it).
    pub fn list_profiles(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let range = match after {
            Some(after) => self.profiles.range(after.as_bytes().to_vec()..),
            None => self.profiles.range::<Vec<u8>, _>(..),
        };
        let mut found = Vec::with_capacity(limit.min(1024));
        for guard in range {
            let (key, value) = guard.into_inner()?;
            if Some(&*key) == after.map(str::as_bytes) {
                continue;
            }
            if found.len() == limit {
                break;
            }
            found.push((String::from_utf8_lossy(&key).into_owned(), value.to_vec()));
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreFaults;

    #[test]
    fn profiles_are_kept_across_a_restart_and_listed_in_pages() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), StoreFaults::default()).unwrap();
            for id in ["c", "a", "b"] {
                store.put_profile(id, id.as_bytes()).unwrap();
            }
            store.put_profile("a", b"a2").unwrap();
        }
        let store = Store::open(dir.path(), StoreFaults::default()).unwrap();
        assert_eq!(store.profile("a").unwrap().as_deref(), Some(&b"a2"[..]));
        assert_eq!(store.profile("zz").unwrap(), None);
        let first = store.list_profiles(None, 2).unwrap();
        let ids: Vec<&str> = first.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        let rest = store.list_profiles(Some("b"), 2).unwrap();
        assert_eq!(rest, vec![("c".to_string(), b"c".to_vec())]);
        assert!(store.list_profiles(Some("c"), 2).unwrap().is_empty());
    }
}
