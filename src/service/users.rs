//! Users: registration, reading (with field sets and the visibility rule),
//! updating.

use std::rc::Rc;

use super::tokens::Principal;
use super::{Passwords, ServiceError};
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
}

impl UserService {
    pub fn new(repo: Rc<dyn UserRepo>, passwords: Passwords) -> Self {
        Self { repo, passwords }
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
        Ok(self.repo.create(&NewUser { email, name, role, password_hash }).await?)
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
        self.repo.find(id, fields).await?.ok_or(ServiceError::NotFound)
    }

    /// Applies changes to user `id`.
    pub async fn update(&self, id: UserId, changes: UserChanges) -> Result<User, ServiceError> {
        let password_hash = match &changes.password {
            Some(password) => Some(self.passwords.hash(password).await?),
            None => None,
        };
        let patch = UserPatch { email: changes.email, name: changes.name, password_hash, role: None };
        if patch.is_empty() {
            return Err(ServiceError::Invalid(crate::domain::Invalid::new(
                "body",
                "change at least one of email, name, password",
            )));
        }
        self.repo.update(id, &patch).await?.ok_or(ServiceError::NotFound)
    }
}
