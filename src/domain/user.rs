//! Users: identity, profile, role and the field sets used for sparse reads.

use std::fmt;
use std::time::SystemTime;

use super::Invalid;

/// A user's id: the database's row id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub i64);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An email address, trimmed and lower-cased, so that one mailbox is one
/// account whatever case it is typed in. Syntax is checked at the edge (the
/// HTTP layer validates with garde); this type guarantees the normal form
/// and the bounds the database relies on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserEmail(String);

/// RFC 5321's limit on a forward path.
pub const MAX_EMAIL_LEN: usize = 254;

impl UserEmail {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let email = raw.trim().to_lowercase();
        if email.is_empty() || email.len() > MAX_EMAIL_LEN {
            return Err(Invalid::new("email", format!("must be 1 to {MAX_EMAIL_LEN} characters")));
        }
        match email.split_once('@') {
            Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@') => {
                Ok(Self(email))
            }
            _ => Err(Invalid::new("email", "must be an email address")),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when the domain has a dot between two labels (`example.com`, not
    /// `localhost`): a new address without one is almost always a typo, and
    /// is refused unless `auth.allow_dotless_email_domains` says otherwise.
    pub fn has_dotted_domain(&self) -> bool {
        let domain = self.0.rsplit_once('@').map_or("", |(_, domain)| domain);
        domain.split('.').count() > 1 && domain.split('.').all(|label| !label.is_empty())
    }
}

/// A display name: trimmed, 1 to 100 characters, not made only of
/// characters that show nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName(String);

pub const MAX_NAME_CHARS: usize = 100;

impl UserName {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let name = raw.trim();
        let chars = name.chars().count();
        if chars == 0 || chars > MAX_NAME_CHARS {
            return Err(Invalid::new("name", format!("must be 1 to {MAX_NAME_CHARS} characters")));
        }
        if name.chars().any(char::is_control) {
            return Err(Invalid::new("name", "must not contain control characters"));
        }
        if name.chars().all(is_invisible) {
            return Err(Invalid::new("name", "must contain a visible character"));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Characters that draw nothing on their own: format characters (zero-width
/// spaces and joiners, the bidirectional controls, the byte-order mark, tag
/// characters), blank fillers that `trim` does not remove (Hangul fillers,
/// the braille blank), soft hyphens and variation selectors. A name made
/// only of these would look empty, or could disguise itself, in every list
/// it appears in.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{2800}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E007F}'
            | '\u{E0100}'..='\u{E01EF}'
    ) || c.is_whitespace()
}

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// A complete user, as stored (without the password hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub email: UserEmail,
    pub name: UserName,
    pub role: Role,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

/// A user as read with a field set: only the requested fields are present.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserView {
    pub id: Option<UserId>,
    pub email: Option<UserEmail>,
    pub name: Option<UserName>,
    pub role: Option<Role>,
    pub created_at: Option<SystemTime>,
    pub updated_at: Option<SystemTime>,
}

impl From<User> for UserView {
    fn from(user: User) -> Self {
        Self {
            id: Some(user.id),
            email: Some(user.email),
            name: Some(user.name),
            role: Some(user.role),
            created_at: Some(user.created_at),
            updated_at: Some(user.updated_at),
        }
    }
}

impl UserView {
    /// Only `fields` of this view.
    pub fn only(self, fields: UserFields) -> Self {
        let keep = |field| fields.contains(field);
        Self {
            id: self.id.filter(|_| keep(UserField::Id)),
            email: self.email.filter(|_| keep(UserField::Email)),
            name: self.name.filter(|_| keep(UserField::Name)),
            role: self.role.filter(|_| keep(UserField::Role)),
            created_at: self.created_at.filter(|_| keep(UserField::CreatedAt)),
            updated_at: self.updated_at.filter(|_| keep(UserField::UpdatedAt)),
        }
    }

    /// The whole user, if every field is present.
    pub fn into_user(self) -> Option<User> {
        Some(User {
            id: self.id?,
            email: self.email?,
            name: self.name?,
            role: self.role?,
            created_at: self.created_at?,
            updated_at: self.updated_at?,
        })
    }
}

/// What the login check needs.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub id: UserId,
    pub role: Role,
    pub password_hash: String,
    /// Copied into the tokens a login issues (see [`UserPatch::revoke_tokens`]).
    pub token_version: i64,
}

/// A user to create; the password is already hashed.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: UserEmail,
    pub name: UserName,
    pub role: Role,
    pub password_hash: String,
}

/// Changes to a user; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    pub email: Option<UserEmail>,
    pub name: Option<UserName>,
    pub password_hash: Option<String>,
    pub role: Option<Role>,
    /// Raise the user's token version, so every token issued before the
    /// change stops working at its next request.
    pub revoke_tokens: bool,
}

impl UserPatch {
    /// Nothing to change (revoking tokens alone is not a change a user asks
    /// for).
    pub fn is_empty(&self) -> bool {
        self.email.is_none() && self.name.is_none() && self.password_hash.is_none() && self.role.is_none()
    }
}

/// A readable user field, for sparse fieldsets (`?fields=id,name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserField {
    Id,
    Email,
    Name,
    Role,
    CreatedAt,
    UpdatedAt,
}

impl UserField {
    pub const ALL: [UserField; 6] = [
        UserField::Id,
        UserField::Email,
        UserField::Name,
        UserField::Role,
        UserField::CreatedAt,
        UserField::UpdatedAt,
    ];

    /// The public name, which is also the column name.
    pub fn name(self) -> &'static str {
        match self {
            UserField::Id => "id",
            UserField::Email => "email",
            UserField::Name => "name",
            UserField::Role => "role",
            UserField::CreatedAt => "created_at",
            UserField::UpdatedAt => "updated_at",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of user fields, as a bit mask (cheap to copy and to use as a cache
/// key for prepared statements).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserFields(u8);

impl UserFields {
    pub const ALL: UserFields = UserFields(0b11_1111);

    pub fn empty() -> Self {
        UserFields(0)
    }

    pub fn with(self, field: UserField) -> Self {
        UserFields(self.0 | field.bit())
    }

    pub fn contains(self, field: UserField) -> bool {
        self.0 & field.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The fields in a fixed order (that of [`UserField::ALL`]).
    pub fn iter(self) -> impl Iterator<Item = UserField> {
        UserField::ALL.into_iter().filter(move |f| self.contains(*f))
    }

    /// A cache key for a prepared statement selecting these columns.
    pub fn mask(self) -> u8 {
        self.0
    }

    /// The inverse of [`UserFields::mask`]; unknown bits are dropped.
    pub fn from_mask(mask: u8) -> Self {
        UserFields(mask & Self::ALL.0)
    }

    /// Parses `id,name`; the error names the first unknown field.
    pub fn parse_list(list: &str) -> Result<Self, Invalid> {
        let mut fields = UserFields::empty();
        for name in list.split(',').map(str::trim) {
            match UserField::parse(name) {
                Some(field) => fields = fields.with(field),
                None => {
                    return Err(Invalid::new(
                        "fields",
                        format!(
                            "unknown field {name:?}; known fields: {}",
                            UserField::ALL.map(UserField::name).join(", ")
                        ),
                    ))
                }
            }
        }
        if fields.is_empty() {
            return Err(Invalid::new("fields", "list at least one field"));
        }
        Ok(fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised() {
        assert_eq!(UserEmail::parse("  Ada@Example.COM ").unwrap().as_str(), "ada@example.com");
        for bad in ["", "no-at", "@x", "x@", "a@b@c"] {
            assert!(UserEmail::parse(bad).is_err(), "{bad}");
        }
        assert!(UserEmail::parse(&format!("{}@x.io", "a".repeat(260))).is_err());
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(UserName::parse(" Ada ").unwrap().as_str(), "Ada");
        assert!(UserName::parse("   ").is_err());
        assert!(UserName::parse(&"é".repeat(101)).is_err());
        assert!(UserName::parse(&"é".repeat(100)).is_ok());
        assert!(UserName::parse("a\u{0}b").is_err());
        // Only invisible or bidirectional-control characters: refused.
        for blank in
            ["\u{200B}\u{200B}", "\u{202E}\u{202D}", "\u{3164}", "\u{2800}\u{FEFF}", "\u{E0041}\u{E0042}"]
        {
            assert!(UserName::parse(blank).is_err(), "{blank:?}");
        }
        // Such characters among visible ones are someone's name.
        assert!(UserName::parse("Zoë\u{200D}").is_ok());
        assert!(UserName::parse("\u{202B}שלום\u{202C}").is_ok());
    }

    #[test]
    fn a_dotted_domain_is_told_apart() {
        assert!(UserEmail::parse("ada@example.com").unwrap().has_dotted_domain());
        for dotless in ["ada@localhost", "ada@example.", "ada@.com", "ada@a..b"] {
            let email = UserEmail::parse(dotless).unwrap();
            assert!(!email.has_dotted_domain(), "{dotless}");
        }
    }

    #[test]
    fn field_lists_parse_and_name_the_unknown_one() {
        let fields = UserFields::parse_list("name,id").unwrap();
        assert_eq!(fields.iter().collect::<Vec<_>>(), vec![UserField::Id, UserField::Name]);
        let error = UserFields::parse_list("id,password_hash").unwrap_err();
        assert_eq!(error.field, "fields");
        assert!(error.issue.contains("password_hash"), "{error}");
        assert!(UserFields::parse_list("").is_err());
    }
}
