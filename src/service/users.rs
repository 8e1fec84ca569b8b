//! Users: registration, reading (with field sets and the visibility rule),
//! updating.

use std::rc::Rc;

use super::tokens::Principal;
use super::{audit, Passwords, ServiceError};
use crate::cache::Cache;
use crate::domain::{
    NewUser, Password, Role, User, UserEmail, UserFields, UserId, UserName, UserPatch, UserView,
};
use crate::repo::UserRepo;

/// Changes a user asks for; `None` keeps a field.
#[derive(Debug, Default)]
pub struct UserChanges {
    pub email: Option<UserEmail>,
    pub name: Option<UserName>,
    pub password: Option<Password>,
}

#[derive(Clone)]
pub struct UserService {
    repo: Rc<dyn UserRepo>,
    passwords: Passwords,
    cache: Cache,
}

impl UserService {
    pub fn new(repo: Rc<dyn UserRepo>, passwords: Passwords, cache: Cache) -> Self {
        Self { repo, passwords, cache }
    }

    /// Creates a user. [`ServiceError::Taken`] if the email is in use.
    pub async fn register(
        &self,
        email: UserEmail,
        name: UserName,
        password: &Password,
        role: Role,
    ) -> Result<User, ServiceError> {
        let password_hash = self.passwords.hash(password).await?;
        let user = self.repo.create(&NewUser { email, name, role, password_hash }).await?;
        audit::record(audit::Event::Registered { user: user.id });
        Ok(user)
    }

    /// Reads `fields` of user `id` as `viewer` sees them: yourself, or anyone
    /// if you are an admin. Others are reported as not found, so ids of
    /// other users cannot be probed.
    pub async fn get(
        &self,
        viewer: Principal,
        id: UserId,
        fields: UserFields,
    ) -> Result<UserView, ServiceError> {
        if viewer.user != id && viewer.role != Role::Admin {
            return Err(ServiceError::NotFound);
        }
        // Whole users are cached. A sparse read uses a cached copy when
        // there is one, and otherwise asks the repository for just its
        // columns (without filling the cache).
        if fields != UserFields::ALL {
            if let Some(user) = self.cache.peek::<User>(id).await {
                return Ok(UserView::from(user).only(fields));
            }
            return self.repo.find(id, fields).await?.ok_or(ServiceError::NotFound);
        }
        let user = self
            .cache
            .get_or_load(id, || async {
                let view = self.repo.find(id, UserFields::ALL).await?;
                Ok::<_, ServiceError>(view.and_then(UserView::into_user))
            })
            .await?;
        user.map(UserView::from).ok_or(ServiceError::NotFound)
    }

    /// Applies changes to user `id`.
    pub async fn update(&self, id: UserId, changes: UserChanges) -> Result<User, ServiceError> {
        let password_hash = match &changes.password {
            Some(password) => Some(self.passwords.hash(password).await?),
            None => None,
        };
        let (password_changed, email_changed) = (password_hash.is_some(), changes.email.is_some());
        let patch = UserPatch { email: changes.email, name: changes.name, password_hash, role: None };
        if patch.is_empty() {
            return Err(ServiceError::Invalid(crate::domain::Invalid::new(
                "body",
                "change at least one of email, name, password",
            )));
        }
        let updated = self.repo.update(id, &patch).await;
        // Invalidate even if the update failed: it may have been applied
        // before the error (a timeout), and a miss costs only a read.
        self.cache.invalidate::<User>(id).await;
        let user = updated?.ok_or(ServiceError::NotFound)?;
        if password_changed {
            audit::record(audit::Event::PasswordChanged { user: id });
        }
        if email_changed {
            audit::record(audit::Event::EmailChanged { user: id });
        }
        Ok(user)
    }
}
