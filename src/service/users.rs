//! Users: registration, reading (with field sets and the visibility rule),
//! updating, and the administrators' role changes and deletions. Every
//! change that must end the sessions before it (a password, email or role
//! change, a deletion) raises the user's token version and drops the
//! cached standing, so the next request with an older token is refused.

use std::rc::Rc;

use super::tokens::Principal;
use super::{audit, Passwords, ServiceError};
use crate::cache::Cache;
use crate::domain::time::Clock;
use crate::domain::{
    Invalid, NewUser, Password, Role, User, UserEmail, UserFields, UserId, UserName, UserPatch, UserView,
};
use crate::repo::{Database, Repos, UserRepo};
use crate::resources::sessions::{SessionRepo, SqlSessionRepo, Standing};

/// Changes a user asks for; `None` keeps a field.
#[derive(Debug, Default)]
pub struct UserChanges {
    pub email: Option<UserEmail>,
    pub name: Option<UserName>,
    pub password: Option<Password>,
    /// Required to change the email or the password: a stolen access token
    /// alone must not be enough to take the account over.
    pub current_password: Option<String>,
}

#[derive(Clone)]
pub struct UserService {
    repo: Rc<dyn UserRepo>,
    db: Rc<Database>,
    passwords: Passwords,
    cache: Cache,
    clock: Rc<dyn Clock>,
}

impl UserService {
    pub fn new(db: Rc<Database>, passwords: Passwords, cache: Cache, clock: Rc<dyn Clock>) -> Self {
        Self { repo: db.users.clone(), db, passwords, cache, clock }
    }

    fn sessions(&self) -> SqlSessionRepo {
        SqlSessionRepo::new(self.db.sql())
    }

    /// Drops every cached copy of the user and of its standing. Even after
    /// a failed write: it may have been applied before the error (a
    /// timeout), and a miss costs only a read.
    async fn forget(&self, id: UserId) {
        self.cache.invalidate::<User>(id).await;
        self.cache.invalidate::<Standing>(id).await;
    }

    /// Checks the current password of `id` before a sensitive change.
    async fn check_current_password(&self, id: UserId, given: Option<&str>) -> Result<(), ServiceError> {
        let Some(given) = given else {
            return Err(
                Invalid::new("current_password", "is required to change the email or the password").into()
            );
        };
        let hash = self.sessions().password_hash(id).await?.ok_or(ServiceError::NotFound)?;
        let candidate = Password::parse(given).ok();
        let matches = match &candidate {
            Some(candidate) => self.passwords.verify(candidate, Some(hash)).await?,
            None => false,
        };
        if matches {
            Ok(())
        } else {
            audit::record(audit::Event::CurrentPasswordWrong { user: id });
            Err(ServiceError::CurrentPasswordWrong)
        }
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

    /// Applies changes to user `id`. Changing the email or the password
    /// takes the current password, and ends every session begun before.
    pub async fn update(&self, id: UserId, changes: UserChanges) -> Result<User, ServiceError> {
        let (password_changed, email_changed) = (changes.password.is_some(), changes.email.is_some());
        if !password_changed && !email_changed && changes.name.is_none() {
            return Err(Invalid::new("body", "change at least one of email, name, password").into());
        }
        if password_changed || email_changed {
            self.check_current_password(id, changes.current_password.as_deref()).await?;
        }
        let password_hash = match &changes.password {
            Some(password) => Some(self.passwords.hash(password).await?),
            None => None,
        };
        let patch = UserPatch {
            email: changes.email,
            name: changes.name,
            password_hash,
            role: None,
            revoke_tokens: password_changed || email_changed,
        };
        let updated = self.repo.update(id, &patch).await;
        self.forget(id).await;
        let user = updated?.ok_or(ServiceError::NotFound)?;
        if password_changed {
            audit::record(audit::Event::PasswordChanged { user: id });
        }
        if email_changed {
            audit::record(audit::Event::EmailChanged { user: id });
        }
        Ok(user)
    }

    /// Gives user `id` another role (administrators only, and not their
    /// own: the last administrator cannot lock everyone out). Ends the
    /// user's sessions, so a demoted administrator's tokens stop working.
    pub async fn set_role(&self, by: Principal, id: UserId, role: Role) -> Result<User, ServiceError> {
        if by.role != Role::Admin {
            return Err(ServiceError::Forbidden);
        }
        if by.user == id {
            return Err(Invalid::new("id", "administrators cannot change their own role").into());
        }
        let patch = UserPatch { role: Some(role), revoke_tokens: true, ..UserPatch::default() };
        let updated = self.repo.update(id, &patch).await;
        self.forget(id).await;
        let user = updated?.ok_or(ServiceError::NotFound)?;
        audit::record(audit::Event::RoleChanged { user: id, by: by.user, role });
        Ok(user)
    }

    /// Deletes user `id` (administrators only, and not themselves). The row
    /// stays for the orders and invoices that refer to it; the email is
    /// freed, and every token and session of the user ends.
    pub async fn delete(&self, by: Principal, id: UserId) -> Result<(), ServiceError> {
        if by.role != Role::Admin {
            return Err(ServiceError::Forbidden);
        }
        if by.user == id {
            return Err(Invalid::new("id", "administrators cannot delete their own account").into());
        }
        let now = self.clock.now();
        let deleted = self.sessions().delete_user(id, now).await;
        self.forget(id).await;
        if !deleted? {
            return Err(ServiceError::NotFound);
        }
        self.sessions().revoke_user(id, now).await?;
        audit::record(audit::Event::UserDeleted { user: id, by: by.user });
        Ok(())
    }
}
