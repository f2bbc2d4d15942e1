//! Mitz, the Dutch national consent service: the XACML "closed question" (*gesloten
//! vraag*) in a SOAP envelope, and its answer. Pure: no I/O, no clock; the caller sends the
//! text over mTLS and hands back the bytes.
//!
//! The question asks whether a requesting organisation (a URA, with its facility type and
//! the requester's role) may see one category of data (the event code) held by another
//! organisation (the author, with its facility type) about one patient (a BSN), for one
//! purpose of use. Mitz answers one XACML decision: `Permit`, `Deny`, `NotApplicable` or
//! `Indeterminate`.
//!
//! Shapes, and where they come from:
//! - The request is the structure of the Nuts knooppunt's Mitz example
//!   (`xacml-request-example.xml`, produced by `component/mitz/xacml/xacml.go`,
//!   `CreateAuthzDecisionQuery`, github.com/nuts-foundation/nuts-knooppunt): a SOAP 1.2
//!   envelope (`http://www.w3.org/2003/05/soap-envelope`) with WS-Addressing headers
//!   (`wsa:Action` `XACMLAuthorizationDecisionQueryRequest`, `wsa:MessageID`,
//!   `wsa:ReplyTo` anonymous, `wsa:To`), whose body is an
//!   `XACMLAuthzDecisionQuery` of the SAML 2.0 profile of XACML 3.0
//!   (`urn:oasis:names:tc:xacml:3.0:profile:saml2.0:v2:schema:protocol:wd-14`) around a
//!   XACML 3.0 `Request` (`urn:oasis:names:tc:xacml:3.0:core:schema:wd-17`).
//! - The attribute ids are those of IHE ITI's Advanced Patient Privacy Consents profile
//!   (APPC, `urn:ihe:iti:appc:2016:...`), XSPA (`purposeofuse`), IHE XUA
//!   (`provider-identifier`) and the Dutch OTV (`urn:nl:otv:names:tc:1.0:...`). Values are
//!   HL7 v3 data types inside `AttributeValue`: an `II` (`InstanceIdentifier root=..
//!   extension=..`) for identifiers and a `CV` (`CodedValue code=.. codeSystem=..`) for
//!   codes.
//! - The answer: per the SOAP binding, the response to a SOAP 1.2 request is a SOAP 1.2
//!   envelope; its body carries a XACML `Response` with one `Result` and its `Decision`
//!   (XACML 3.0 core §5.47–5.53; knooppunt's `ParseXACMLResponse` accepts the `Response`
//!   anywhere under the body, in the XACML 3.0 namespace or in none, which covers the SAML
//!   profile's `samlp:Response`/`Assertion`/`XACMLAuthzDecisionStatement` wrapping).
//!
//! Signatures: knooppunt can sign the query (XML-DSig, enveloped, exclusive C14N); this
//! module does not, and it does not verify any signature on the answer. The answer's
//! authenticity rests on the mTLS channel to the configured Mitz endpoint, whose server
//! certificate is checked against the configured CA. [`parse_response_details`] reports
//! whether the answer carried an XML signature, for operators who want to know.
//!
//! Nothing here echoes patient data: no [`MitzError`] text contains an input value or any
//! part of the answer, only field names, element names and byte offsets.

use std::fmt;
use std::fmt::Write as _;

use quick_xml::escape::escape;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

/// SOAP 1.2's envelope namespace.
pub const SOAP12_NS: &str = "http://www.w3.org/2003/05/soap-envelope";
/// SOAP 1.1's envelope namespace: refused, the question is SOAP 1.2.
pub const SOAP11_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// XACML 3.0's core schema namespace (the `Request`, `Response`, `Result`, `Decision`).
pub const XACML3_NS: &str = "urn:oasis:names:tc:xacml:3.0:core:schema:wd-17";
/// The SAML 2.0 profile of XACML: the query element's namespace.
pub const XACML_SAML_PROTOCOL_NS: &str =
    "urn:oasis:names:tc:xacml:3.0:profile:saml2.0:v2:schema:protocol:wd-14";
/// HL7 v3: the namespace of `InstanceIdentifier` and `CodedValue`.
pub const HL7_NS: &str = "urn:hl7-org:v3";
/// XML-DSig: a `Signature` in this namespace marks a signed answer.
pub const XMLDSIG_NS: &str = "http://www.w3.org/2000/09/xmldsig#";

/// The OID of the BSN (the `root` of the patient's `InstanceIdentifier`).
pub const BSN_ROOT: &str = "2.16.840.1.113883.2.4.6.3";
/// The OID of the URA number (organisations in the UZI register).
pub const URA_ROOT: &str = "2.16.528.1.1007.3.3";
/// The OID of the UZI number of a natural person (practitioners, the mandated person).
pub const UZI_ROOT: &str = "2.16.528.1.1007.3.1";
/// The default code system of facility types (*zorgaanbiedersoort*, Vektis AGB table).
pub const FACILITY_TYPE_SYSTEM: &str = "2.16.840.1.113883.2.4.15.1060";
/// The default code system of roles (*beroepen/rollen*, UZI role codes such as `01.015`).
pub const ROLE_SYSTEM: &str = "2.16.840.1.113883.2.4.15.111";
/// The default code system of event codes (the data categories of the Mitz *gegevenscategorieën*).
pub const EVENT_CODE_SYSTEM: &str = "2.16.840.1.113883.2.4.3.111.5.10.1";
/// The default code system of the purpose of use (HL7 `PurposeOfUse`, e.g. `TREAT`).
pub const PURPOSE_OF_USE_SYSTEM: &str = "2.16.840.1.113883.1.11.20448";

const CATEGORY_RESOURCE: &str = "urn:oasis:names:tc:xacml:3.0:attribute-category:resource";
const CATEGORY_ACTION: &str = "urn:oasis:names:tc:xacml:3.0:attribute-category:action";
const CATEGORY_SUBJECT: &str = "urn:oasis:names:tc:xacml:1.0:subject-category:access-subject";
const CATEGORY_ENVIRONMENT: &str = "urn:oasis:names:tc:xacml:3.0:attribute-category:environment";

const ID_RESOURCE: &str = "urn:oasis:names:tc:xacml:2.0:resource:resource-id";
const ID_AUTHOR_FACILITY_TYPE: &str =
    "urn:ihe:iti:appc:2016:document-entry:healthcare-facility-type-code";
const ID_AUTHOR_INSTITUTION: &str = "urn:ihe:iti:appc:2016:author-institution:id";
const ID_EVENT_CODE: &str = "urn:ihe:iti:appc:2016:document-entry:event-code";
const ID_ROLE: &str = "urn:oasis:names:tc:xacml:2.0:subject:role";
const ID_MANDATED: &str = "urn:nl:otv:names:tc:1.0:subject:mandated";
const ID_PROVIDER: &str = "urn:ihe:iti:xua:2017:subject:provider-identifier";
const ID_PROVIDER_INSTITUTION: &str = "urn:nl:otv:names:tc:1.0:subject:provider-institution";
const ID_CONSULTING_FACILITY_TYPE: &str =
    "urn:nl:otv:names:tc:1.0:subject:consulting-healthcare-facility-type-code";
const ID_PURPOSE_OF_USE: &str = "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse";

/// The assigning authority named on UZI numbers, as in the example.
const CIBG: &str = "CIBG";

/// The largest answer [`parse_response`] reads; the caller's read limit should be lower.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// The deepest element nesting [`parse_response`] accepts.
pub const MAX_DEPTH: usize = 32;

/// A coded value (HL7 v3 `CV`): a code and the OID of its code system.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MitzCode {
    /// The code: 1–32 of `A-Z a-z 0-9 . - _` (for example `Z3`, `01.015`, `GGC002`, `TREAT`).
    pub code: String,
    /// The code system's OID, dotted digits (for example [`ROLE_SYSTEM`]).
    pub code_system: String,
}

impl MitzCode {
    /// A code in the given code system.
    pub fn new(code: impl Into<String>, code_system: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            code_system: code_system.into(),
        }
    }

    /// A facility type in [`FACILITY_TYPE_SYSTEM`] (for example `Z3`, a GP practice).
    pub fn facility_type(code: impl Into<String>) -> Self {
        Self::new(code, FACILITY_TYPE_SYSTEM)
    }

    /// A role in [`ROLE_SYSTEM`] (for example `01.015`, a general practitioner).
    pub fn role(code: impl Into<String>) -> Self {
        Self::new(code, ROLE_SYSTEM)
    }

    /// An event code (data category) in [`EVENT_CODE_SYSTEM`] (for example `GGC002`).
    pub fn event_code(code: impl Into<String>) -> Self {
        Self::new(code, EVENT_CODE_SYSTEM)
    }

    /// A purpose of use in [`PURPOSE_OF_USE_SYSTEM`] (for example `TREAT`).
    pub fn purpose_of_use(code: impl Into<String>) -> Self {
        Self::new(code, PURPOSE_OF_USE_SYSTEM)
    }
}

/// Every input of the closed question. All are mandatory except `requesting_practitioner`
/// and `mandated`, which are left out of the question when `None`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MitzQuestion {
    /// The patient's BSN: 9 digits passing the 11-check. Resource category,
    /// `urn:oasis:names:tc:xacml:2.0:resource:resource-id`, II root [`BSN_ROOT`].
    pub patient_bsn: String,
    /// The data holder (the custodian, whose records the consent is about): its URA, 8
    /// digits. Resource category, `urn:ihe:iti:appc:2016:author-institution:id`, II root
    /// [`URA_ROOT`].
    pub author_ura: String,
    /// The data holder's facility type. Resource category,
    /// `urn:ihe:iti:appc:2016:document-entry:healthcare-facility-type-code`, CV.
    pub author_facility_type: MitzCode,
    /// The data category asked for (the APPC document-entry event code, e.g. `GGC002`).
    /// Action category, `urn:ihe:iti:appc:2016:document-entry:event-code`, CV.
    pub event_code: MitzCode,
    /// The requester's role (UZI role code such as `01.015`). Access-subject category,
    /// `urn:oasis:names:tc:xacml:2.0:subject:role`, CV.
    pub role: MitzCode,
    /// The requesting practitioner's UZI number, 9 digits; optional. Access-subject
    /// category, `urn:ihe:iti:xua:2017:subject:provider-identifier`, II root [`UZI_ROOT`],
    /// assigning authority `CIBG`.
    pub requesting_practitioner: Option<String>,
    /// The UZI number of the person the requester acts for (mandate), 9 digits; optional.
    /// Access-subject category, `urn:nl:otv:names:tc:1.0:subject:mandated`, II root
    /// [`UZI_ROOT`], assigning authority `CIBG`.
    pub mandated: Option<String>,
    /// The requesting organisation's URA, 8 digits. Access-subject category,
    /// `urn:nl:otv:names:tc:1.0:subject:provider-institution`, II root [`URA_ROOT`].
    pub requesting_ura: String,
    /// The requesting organisation's facility type. Access-subject category,
    /// `urn:nl:otv:names:tc:1.0:subject:consulting-healthcare-facility-type-code`, CV.
    pub requesting_facility_type: MitzCode,
    /// Why the data is asked for (usually `TREAT`). Environment category,
    /// `urn:oasis:names:tc:xspa:1.0:subject:purposeofuse`, CV.
    pub purpose_of_use: MitzCode,
}

/// How the envelope is addressed: the per-source part of the question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MitzRequestSettings {
    /// The `wsa:To` address: the Mitz endpoint the question is posted to. At most 2,048
    /// characters, no control characters.
    pub to: String,
}

/// A question read back from its envelope ([`parse_request`]): the stand-in's view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MitzRequest {
    /// The question's inputs.
    pub question: MitzQuestion,
    /// The `wsa:To` address.
    pub to: String,
    /// The `wsa:MessageID`.
    pub message_id: String,
}

/// Mitz's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MitzDecision {
    /// The patient consented: the requester may see the data.
    Permit,
    /// The patient refused.
    Deny,
    /// No consent is registered for this question.
    NotApplicable,
    /// Mitz could not decide (for example, an input it does not know).
    Indeterminate,
}

impl MitzDecision {
    /// The XACML name (`Permit`, `Deny`, `NotApplicable`, `Indeterminate`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Permit => "Permit",
            Self::Deny => "Deny",
            Self::NotApplicable => "NotApplicable",
            Self::Indeterminate => "Indeterminate",
        }
    }

    fn from_text(text: &str) -> Option<Self> {
        match text {
            "Permit" => Some(Self::Permit),
            "Deny" => Some(Self::Deny),
            "NotApplicable" => Some(Self::NotApplicable),
            "Indeterminate" => Some(Self::Indeterminate),
            _ => None,
        }
    }
}

impl fmt::Display for MitzDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`parse_response_details`] found besides the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MitzAnswer {
    /// The decision.
    pub decision: MitzDecision,
    /// Whether an XML-DSig `Signature` element appeared anywhere in the answer. Not
    /// verified: the answer's authenticity rests on mTLS.
    pub signature_present: bool,
}

/// An input of the question, named in errors (never its value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MitzField {
    /// [`MitzQuestion::patient_bsn`].
    PatientBsn,
    /// [`MitzQuestion::author_ura`].
    AuthorUra,
    /// [`MitzQuestion::author_facility_type`].
    AuthorFacilityType,
    /// [`MitzQuestion::event_code`].
    EventCode,
    /// [`MitzQuestion::role`].
    Role,
    /// [`MitzQuestion::requesting_practitioner`].
    RequestingPractitioner,
    /// [`MitzQuestion::mandated`].
    Mandated,
    /// [`MitzQuestion::requesting_ura`].
    RequestingUra,
    /// [`MitzQuestion::requesting_facility_type`].
    RequestingFacilityType,
    /// [`MitzQuestion::purpose_of_use`].
    PurposeOfUse,
    /// [`MitzRequestSettings::to`].
    To,
}

impl MitzField {
    /// The field's name, as in [`MitzQuestion`].
    pub fn name(self) -> &'static str {
        match self {
            Self::PatientBsn => "patient_bsn",
            Self::AuthorUra => "author_ura",
            Self::AuthorFacilityType => "author_facility_type",
            Self::EventCode => "event_code",
            Self::Role => "role",
            Self::RequestingPractitioner => "requesting_practitioner",
            Self::Mandated => "mandated",
            Self::RequestingUra => "requesting_ura",
            Self::RequestingFacilityType => "requesting_facility_type",
            Self::PurposeOfUse => "purpose_of_use",
            Self::To => "to",
        }
    }
}

impl fmt::Display for MitzField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What is wrong with an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputProblem {
    /// Nine digits were expected, and the 11-check must pass.
    NotABsn,
    /// A number of exactly this many ASCII digits was expected.
    NotDigits(usize),
    /// A code is 1–32 of `A-Z a-z 0-9 . - _`.
    NotACode,
    /// A code system is an OID: dotted decimal numbers, at most 128 characters.
    NotAnOid,
    /// Empty, longer than 2,048 characters, or holding a control character.
    NotAnAddress,
}

impl fmt::Display for InputProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotABsn => f.write_str("is not a BSN (9 digits passing the 11-check)"),
            Self::NotDigits(n) => write!(f, "is not {n} digits"),
            Self::NotACode => f.write_str("has a code that is not 1-32 of A-Z a-z 0-9 . - _"),
            Self::NotAnOid => f.write_str("has a code system that is not an OID"),
            Self::NotAnAddress => f.write_str(
                "is not an address (empty, over 2048 characters, or a control character)",
            ),
        }
    }
}

/// A SOAP 1.2 fault code (the `env:Code/env:Value`), never the fault's reason text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultCode {
    /// `VersionMismatch`.
    VersionMismatch,
    /// `MustUnderstand`.
    MustUnderstand,
    /// `DataEncodingUnknown`.
    DataEncodingUnknown,
    /// `Sender`: Mitz found the question wrong.
    Sender,
    /// `Receiver`: Mitz failed.
    Receiver,
    /// No code, or one SOAP 1.2 does not define.
    Other,
}

impl FaultCode {
    fn from_text(text: &str) -> Self {
        let local = text.trim().rsplit(':').next().unwrap_or_default();
        match local {
            "VersionMismatch" => Self::VersionMismatch,
            "MustUnderstand" => Self::MustUnderstand,
            "DataEncodingUnknown" => Self::DataEncodingUnknown,
            "Sender" => Self::Sender,
            "Receiver" => Self::Receiver,
            _ => Self::Other,
        }
    }
}

impl fmt::Display for FaultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::VersionMismatch => "VersionMismatch",
            Self::MustUnderstand => "MustUnderstand",
            Self::DataEncodingUnknown => "DataEncodingUnknown",
            Self::Sender => "Sender",
            Self::Receiver => "Receiver",
            Self::Other => "other",
        })
    }
}

/// Why a question could not be built or an answer not be read. No variant holds an input
/// value or answer text, so every message may be logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MitzError {
    /// An input is not what its field claims.
    #[error("mitz question: `{field}` {problem}")]
    Input {
        /// Which input.
        field: MitzField,
        /// What is wrong with it.
        problem: InputProblem,
    },
    /// The answer is larger than [`MAX_RESPONSE_BYTES`].
    #[error("mitz answer: larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    /// The answer is not UTF-8.
    #[error("mitz answer: not UTF-8")]
    NotUtf8,
    /// The answer is not well-formed XML.
    #[error("mitz answer: not well-formed XML (near byte {at})")]
    Xml {
        /// The byte offset where reading failed.
        at: u64,
    },
    /// The answer declares a DTD: refused (no entity can be defined, so none is expanded).
    #[error("mitz answer: has a DTD, refused")]
    Dtd,
    /// The answer refers to an entity XML does not predefine.
    #[error("mitz answer: refers to an undefined entity")]
    Entity,
    /// Elements nest deeper than [`MAX_DEPTH`].
    #[error("mitz answer: elements nest deeper than {MAX_DEPTH}")]
    TooDeep,
    /// The root is not a SOAP envelope.
    #[error("mitz answer: not a SOAP envelope")]
    NotSoap,
    /// A known element is in a namespace other than the one expected.
    #[error("mitz answer: `{element}` is in the wrong namespace (expected `{expected}`)")]
    WrongNamespace {
        /// The element's local name.
        element: &'static str,
        /// The namespace expected.
        expected: &'static str,
    },
    /// The envelope has no `Body`, or several.
    #[error("mitz answer: the envelope has no single Body")]
    Body,
    /// The body carries a SOAP fault.
    #[error("mitz answer: SOAP fault, code {code}")]
    SoapFault {
        /// The fault's code.
        code: FaultCode,
    },
    /// No XACML `Response` under the body.
    #[error("mitz answer: no XACML Response")]
    MissingResponse,
    /// More than one XACML `Response`.
    #[error("mitz answer: several XACML Responses")]
    SeveralResponses,
    /// The `Response` has no `Result`.
    #[error("mitz answer: no Result")]
    MissingResult,
    /// The `Response` has more than one `Result` (one question, one result).
    #[error("mitz answer: several Results")]
    SeveralResults,
    /// The `Result` has no `Decision`.
    #[error("mitz answer: no Decision")]
    MissingDecision,
    /// The `Result` has more than one `Decision`.
    #[error("mitz answer: several Decisions")]
    SeveralDecisions,
    /// The `Decision` is not one of XACML's four.
    #[error("mitz answer: the Decision is not Permit, Deny, NotApplicable or Indeterminate")]
    UnknownDecision,
    /// A named argument ([`MitzQuestion::from_args`]) is required and absent.
    #[error("mitz question: argument `{0}` is missing")]
    MissingArgument(&'static str),
    /// A named argument is not one of [`ARGUMENTS`] (its name is not repeated: it could
    /// be anything), or is given twice.
    #[error("mitz question: an argument is unknown or given twice (known: {})", ARGUMENTS.join(", "))]
    UnknownArgument,
    /// A question read back ([`parse_request`]) lacks or repeats an attribute, or has one
    /// it does not know.
    #[error("mitz question: attribute `{attribute}` is {problem}")]
    Attribute {
        /// The attribute, named by its field.
        attribute: &'static str,
        /// `missing`, `repeated` or `unknown`.
        problem: &'static str,
    },
}

fn input(field: MitzField, problem: InputProblem) -> MitzError {
    MitzError::Input { field, problem }
}

fn digits(value: &str, count: usize) -> bool {
    value.len() == count && value.bytes().all(|b| b.is_ascii_digit())
}

fn check_bsn(value: &str) -> Result<(), MitzError> {
    // The 11-check alone passes nine zeros, which is no BSN.
    if crate::mask::is_bsn(value) && value.bytes().any(|b| b != b'0') {
        Ok(())
    } else {
        Err(input(MitzField::PatientBsn, InputProblem::NotABsn))
    }
}

fn check_digits(field: MitzField, value: &str, count: usize) -> Result<(), MitzError> {
    if digits(value, count) {
        Ok(())
    } else {
        Err(input(field, InputProblem::NotDigits(count)))
    }
}

fn is_code(code: &str) -> bool {
    (1..=32).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

fn is_oid(oid: &str) -> bool {
    oid.len() <= 128
        && oid.split('.').count() >= 2
        && oid.split('.').all(|arc| {
            !arc.is_empty()
                && arc.bytes().all(|b| b.is_ascii_digit())
                && (arc == "0" || !arc.starts_with('0'))
        })
}

fn check_code(field: MitzField, value: &MitzCode) -> Result<(), MitzError> {
    if !is_code(&value.code) {
        return Err(input(field, InputProblem::NotACode));
    }
    if !is_oid(&value.code_system) {
        return Err(input(field, InputProblem::NotAnOid));
    }
    Ok(())
}

fn check_address(value: &str) -> Result<(), MitzError> {
    if value.is_empty() || value.len() > 2048 || value.chars().any(char::is_control) {
        Err(input(MitzField::To, InputProblem::NotAnAddress))
    } else {
        Ok(())
    }
}

/// The argument names [`MitzQuestion::from_args`] takes, as a policy passes them
/// (`sources.mitz({'bsn': .., 'requester_ura': ..})`), each with the field it fills.
pub const ARGUMENTS: [&str; 10] = [
    "bsn",
    "requester_ura",
    "requester_facility_type",
    "subject_role",
    "provider_id",
    "mandated_id",
    "author_ura",
    "author_facility_type",
    "event_code",
    "purpose_of_use",
];

impl MitzQuestion {
    /// A question from named arguments (keys in [`ARGUMENTS`]): `bsn` → `patient_bsn`,
    /// `requester_ura` → `requesting_ura`, `requester_facility_type` →
    /// `requesting_facility_type`, `subject_role` → `role`, `provider_id` →
    /// `requesting_practitioner`, `mandated_id` → `mandated`, and `author_ura`,
    /// `author_facility_type`, `event_code`, `purpose_of_use` as named. Codes are taken in
    /// their default code systems ([`FACILITY_TYPE_SYSTEM`], [`ROLE_SYSTEM`],
    /// [`EVENT_CODE_SYSTEM`], [`PURPOSE_OF_USE_SYSTEM`]). All are required except
    /// `provider_id` and `mandated_id`. A source's configured defaults are merged in by the
    /// caller first (arguments override defaults). The result is validated.
    pub fn from_args<'a>(
        args: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, MitzError> {
        let mut values: [Option<&'a str>; ARGUMENTS.len()] = [None; ARGUMENTS.len()];
        for (key, value) in args {
            let slot = ARGUMENTS
                .iter()
                .position(|name| *name == key)
                .and_then(|index| values.get_mut(index))
                .ok_or(MitzError::UnknownArgument)?;
            if slot.replace(value).is_some() {
                return Err(MitzError::UnknownArgument);
            }
        }
        let get = |name: &'static str| -> Option<String> {
            ARGUMENTS
                .iter()
                .position(|n| *n == name)
                .and_then(|index| values.get(index).copied().flatten())
                .map(str::to_owned)
        };
        let required = |name: &'static str| get(name).ok_or(MitzError::MissingArgument(name));
        let question = Self {
            patient_bsn: required("bsn")?,
            author_ura: required("author_ura")?,
            author_facility_type: MitzCode::facility_type(required("author_facility_type")?),
            event_code: MitzCode::event_code(required("event_code")?),
            role: MitzCode::role(required("subject_role")?),
            requesting_practitioner: get("provider_id"),
            mandated: get("mandated_id"),
            requesting_ura: required("requester_ura")?,
            requesting_facility_type: MitzCode::facility_type(required("requester_facility_type")?),
            purpose_of_use: MitzCode::purpose_of_use(required("purpose_of_use")?),
        };
        question.validate()?;
        Ok(question)
    }

    /// Checks every input: the BSN's 11-check, URAs of 8 digits, UZI numbers of 9 digits,
    /// codes and OIDs. The first problem found is returned, naming the field only.
    pub fn validate(&self) -> Result<(), MitzError> {
        check_bsn(&self.patient_bsn)?;
        check_digits(MitzField::AuthorUra, &self.author_ura, 8)?;
        check_code(MitzField::AuthorFacilityType, &self.author_facility_type)?;
        check_code(MitzField::EventCode, &self.event_code)?;
        check_code(MitzField::Role, &self.role)?;
        if let Some(uzi) = &self.requesting_practitioner {
            check_digits(MitzField::RequestingPractitioner, uzi, 9)?;
        }
        if let Some(uzi) = &self.mandated {
            check_digits(MitzField::Mandated, uzi, 9)?;
        }
        check_digits(MitzField::RequestingUra, &self.requesting_ura, 8)?;
        check_code(
            MitzField::RequestingFacilityType,
            &self.requesting_facility_type,
        )?;
        check_code(MitzField::PurposeOfUse, &self.purpose_of_use)?;
        Ok(())
    }
}

/// The closed question as a SOAP 1.2 envelope, with a fresh `urn:uuid` message id.
/// See [`build_request_with_id`].
pub fn build_request(
    q: &MitzQuestion,
    settings: &MitzRequestSettings,
) -> Result<String, MitzError> {
    build_request_with_id(q, settings, uuid::Uuid::new_v4())
}

/// The closed question as a SOAP 1.2 envelope, laid out as the reference example is
/// (4-space indentation, the same element and attribute order). Every input is checked
/// ([`MitzQuestion::validate`]) and every value is XML-escaped on top of that.
pub fn build_request_with_id(
    q: &MitzQuestion,
    settings: &MitzRequestSettings,
    message_id: uuid::Uuid,
) -> Result<String, MitzError> {
    q.validate()?;
    check_address(&settings.to)?;
    let mut out = String::with_capacity(5 * 1024);
    out.push_str(concat!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
        "<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"http://www.w3.org/2003/05/soap-envelope\"",
        " xmlns:s=\"http://www.w3.org/2001/XMLSchema\"",
        " xmlns:types=\"urn:oasis:names:tc:xacml:3.0:profile:saml2.0:v2:schema:protocol:wd-14\"",
        " xmlns:wsa=\"http://www.w3.org/2005/08/addressing\"",
        " xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\n",
        "    <SOAP-ENV:Header>\n",
        "        <wsa:Action>XACMLAuthorizationDecisionQueryRequest</wsa:Action>\n",
    ));
    let _ = writeln!(
        out,
        "        <wsa:MessageID>urn:uuid:{}</wsa:MessageID>",
        message_id.hyphenated()
    );
    out.push_str(concat!(
        "        <wsa:ReplyTo>\n",
        "            <wsa:Address>http://www.w3.org/2005/08/addressing/anonymous</wsa:Address>\n",
        "        </wsa:ReplyTo>\n",
    ));
    let _ = writeln!(
        out,
        "        <wsa:To>{}</wsa:To>",
        escape(settings.to.as_str())
    );
    out.push_str(concat!(
        "    </SOAP-ENV:Header>\n",
        "    <SOAP-ENV:Body>\n",
        "        <types:XACMLAuthzDecisionQuery>\n",
        "            <Request CombinedDecision=\"false\" ReturnPolicyIdList=\"false\" xmlns=\"urn:oasis:names:tc:xacml:3.0:core:schema:wd-17\">\n",
    ));

    open_category(&mut out, CATEGORY_RESOURCE, "resource");
    instance_identifier(&mut out, ID_RESOURCE, BSN_ROOT, &q.patient_bsn, false);
    coded_value(&mut out, ID_AUTHOR_FACILITY_TYPE, &q.author_facility_type);
    instance_identifier(
        &mut out,
        ID_AUTHOR_INSTITUTION,
        URA_ROOT,
        &q.author_ura,
        false,
    );
    close_category(&mut out);

    open_category(&mut out, CATEGORY_ACTION, "action0");
    coded_value(&mut out, ID_EVENT_CODE, &q.event_code);
    close_category(&mut out);

    open_category(&mut out, CATEGORY_SUBJECT, "subject");
    coded_value(&mut out, ID_ROLE, &q.role);
    if let Some(uzi) = &q.mandated {
        instance_identifier(&mut out, ID_MANDATED, UZI_ROOT, uzi, true);
    }
    if let Some(uzi) = &q.requesting_practitioner {
        instance_identifier(&mut out, ID_PROVIDER, UZI_ROOT, uzi, true);
    }
    instance_identifier(
        &mut out,
        ID_PROVIDER_INSTITUTION,
        URA_ROOT,
        &q.requesting_ura,
        false,
    );
    coded_value(
        &mut out,
        ID_CONSULTING_FACILITY_TYPE,
        &q.requesting_facility_type,
    );
    close_category(&mut out);

    open_category(&mut out, CATEGORY_ENVIRONMENT, "environment");
    coded_value(&mut out, ID_PURPOSE_OF_USE, &q.purpose_of_use);
    close_category(&mut out);

    out.push_str(concat!(
        "            </Request>\n",
        "        </types:XACMLAuthzDecisionQuery>\n",
        "    </SOAP-ENV:Body>\n",
        "</SOAP-ENV:Envelope>",
    ));
    Ok(out)
}

fn open_category(out: &mut String, category: &str, id: &str) {
    let _ = writeln!(
        out,
        "                <Attributes Category=\"{category}\" xml:id=\"{id}\">"
    );
}

fn close_category(out: &mut String) {
    out.push_str("                </Attributes>\n");
}

fn instance_identifier(out: &mut String, id: &str, root: &str, extension: &str, cibg: bool) {
    let _ = writeln!(
        out,
        "                    <Attribute AttributeId=\"{id}\" IncludeInResult=\"true\">\n                        <AttributeValue DataType=\"urn:hl7-org:v3#II\">"
    );
    let authority = if cibg {
        format!("assigningAuthorityName=\"{CIBG}\" ")
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "                            <InstanceIdentifier {authority}extension=\"{}\" root=\"{}\" xmlns=\"urn:hl7-org:v3\"/>",
        escape(extension),
        escape(root),
    );
    out.push_str(concat!(
        "                        </AttributeValue>\n",
        "                    </Attribute>\n",
    ));
}

fn coded_value(out: &mut String, id: &str, value: &MitzCode) {
    let _ = writeln!(
        out,
        "                    <Attribute AttributeId=\"{id}\" IncludeInResult=\"true\">\n                        <AttributeValue DataType=\"urn:hl7-org:v3#CV\">"
    );
    let _ = writeln!(
        out,
        "                            <CodedValue code=\"{}\" codeSystem=\"{}\" xmlns=\"urn:hl7-org:v3\"/>",
        escape(value.code.as_str()),
        escape(value.code_system.as_str()),
    );
    out.push_str(concat!(
        "                        </AttributeValue>\n",
        "                    </Attribute>\n",
    ));
}

/// The namespace an element resolved to.
fn namespace<'a>(resolved: &'a ResolveResult<'_>) -> Option<&'a str> {
    match resolved {
        ResolveResult::Bound(ns) => Some(ns.0),
        _ => None,
    }
}

fn xml_error(reader: &NsReader<&[u8]>) -> MitzError {
    MitzError::Xml {
        at: reader.error_position(),
    }
}

/// Checks a general entity reference: only XML's five and character references pass.
fn check_reference(name: &str) -> Result<(), MitzError> {
    let known = matches!(name, "lt" | "gt" | "amp" | "apos" | "quot")
        || name.strip_prefix("#x").is_some_and(|hex| {
            u32::from_str_radix(hex, 16)
                .ok()
                .and_then(char::from_u32)
                .is_some()
        })
        || name
            .strip_prefix('#')
            .is_some_and(|dec| dec.parse::<u32>().ok().and_then(char::from_u32).is_some());
    if known {
        Ok(())
    } else {
        Err(MitzError::Entity)
    }
}

fn utf8(body: &[u8]) -> Result<&str, MitzError> {
    if body.len() > MAX_RESPONSE_BYTES {
        return Err(MitzError::TooLarge);
    }
    std::str::from_utf8(body).map_err(|_| MitzError::NotUtf8)
}

/// Where an element of the answer sits, as far as the parser cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Envelope,
    Header,
    Body,
    Fault,
    FaultCode,
    FaultCodeValue,
    Response,
    Result,
    Decision,
    Other,
}

/// Mitz's decision from its SOAP answer. See [`parse_response_details`].
pub fn parse_response(body: &[u8]) -> Result<MitzDecision, MitzError> {
    parse_response_details(body).map(|answer| answer.decision)
}

/// Reads Mitz's answer: a SOAP 1.2 envelope whose body holds exactly one XACML 3.0
/// `Response` (in the XACML 3.0 namespace or in none; possibly inside a SAML wrapper)
/// with exactly one `Result` holding exactly one `Decision`. A SOAP fault, a DTD, an
/// undefined entity, a SOAP 1.1 envelope, a XACML 2.0 `Response`, several responses,
/// results or decisions, or any other decision text is an error.
pub fn parse_response_details(body: &[u8]) -> Result<MitzAnswer, MitzError> {
    let text = utf8(body)?;
    let mut reader = NsReader::from_str(text);
    let mut stack: Vec<Place> = Vec::with_capacity(MAX_DEPTH);
    let mut bodies = 0usize;
    let mut responses = 0usize;
    let mut results = 0usize;
    let mut decisions = 0usize;
    let mut decision_text = String::new();
    let mut decision_clean = true;
    let mut fault: Option<FaultCode> = None;
    let mut fault_code_text = String::new();
    let mut signature_present = false;
    let mut seen_root = false;

    loop {
        let step = reader
            .read_resolved_event()
            .map(|(resolved, event)| (namespace(&resolved).map(str::to_owned), event));
        let Ok((ns, event)) = step else {
            return Err(xml_error(&reader));
        };
        match event {
            Event::Start(ref start) | Event::Empty(ref start) => {
                let empty = matches!(event, Event::Empty(_));
                let local = start.local_name();
                let local = local.as_ref();
                let parent = stack.last().copied();
                if ns.as_deref() == Some(XMLDSIG_NS) && local == "Signature" {
                    signature_present = true;
                }
                let place = match parent {
                    None => {
                        if seen_root {
                            return Err(xml_error(&reader));
                        }
                        seen_root = true;
                        if local != "Envelope" {
                            return Err(MitzError::NotSoap);
                        }
                        if ns.as_deref() != Some(SOAP12_NS) {
                            return Err(MitzError::WrongNamespace {
                                element: "Envelope",
                                expected: SOAP12_NS,
                            });
                        }
                        Place::Envelope
                    }
                    Some(Place::Envelope) => match (local, ns.as_deref() == Some(SOAP12_NS)) {
                        ("Header", true) => Place::Header,
                        ("Body", true) => {
                            bodies += 1;
                            Place::Body
                        }
                        ("Header" | "Body", false) => {
                            return Err(MitzError::WrongNamespace {
                                element: if local == "Body" { "Body" } else { "Header" },
                                expected: SOAP12_NS,
                            });
                        }
                        _ => Place::Other,
                    },
                    Some(Place::Body) if local == "Fault" => {
                        if ns.as_deref() != Some(SOAP12_NS) {
                            return Err(MitzError::WrongNamespace {
                                element: "Fault",
                                expected: SOAP12_NS,
                            });
                        }
                        fault = Some(FaultCode::Other);
                        Place::Fault
                    }
                    Some(Place::Fault) if local == "Code" && ns.as_deref() == Some(SOAP12_NS) => {
                        Place::FaultCode
                    }
                    Some(Place::FaultCode)
                        if local == "Value" && ns.as_deref() == Some(SOAP12_NS) =>
                    {
                        Place::FaultCodeValue
                    }
                    Some(Place::Decision) => {
                        // A decision is text; an element inside makes it something else.
                        decision_clean = false;
                        Place::Other
                    }
                    Some(Place::Response) if local == "Result" && xacml(ns.as_deref()) => {
                        results += 1;
                        Place::Result
                    }
                    Some(Place::Result) if local == "Decision" && xacml(ns.as_deref()) => {
                        decisions += 1;
                        Place::Decision
                    }
                    Some(
                        Place::Header | Place::Fault | Place::FaultCode | Place::FaultCodeValue,
                    ) => Place::Other,
                    Some(_) if local == "Response" && in_body(&stack) => {
                        if xacml(ns.as_deref()) {
                            if stack.contains(&Place::Response) {
                                return Err(MitzError::SeveralResponses);
                            }
                            responses += 1;
                            Place::Response
                        } else if ns
                            .as_deref()
                            .is_some_and(|ns| ns.starts_with("urn:oasis:names:tc:xacml:"))
                        {
                            return Err(MitzError::WrongNamespace {
                                element: "Response",
                                expected: XACML3_NS,
                            });
                        } else {
                            // Another protocol's Response (samlp:Response): a wrapper.
                            Place::Other
                        }
                    }
                    Some(_) => Place::Other,
                };
                if !empty {
                    if stack.len() >= MAX_DEPTH {
                        return Err(MitzError::TooDeep);
                    }
                    stack.push(place);
                }
            }
            Event::End(_) => {
                if stack.pop().is_none() {
                    return Err(xml_error(&reader));
                }
            }
            Event::Text(ref t) => {
                let content = t.xml10_content();
                match stack.last() {
                    Some(Place::Decision) => push_bounded(&mut decision_text, &content),
                    Some(Place::FaultCodeValue) => push_bounded(&mut fault_code_text, &content),
                    None if !content.trim().is_empty() => return Err(xml_error(&reader)),
                    _ => {}
                }
            }
            Event::CData(ref t) => match stack.last() {
                Some(Place::Decision) => push_bounded(&mut decision_text, &t.xml10_content()),
                None => return Err(xml_error(&reader)),
                _ => {}
            },
            Event::GeneralRef(ref r) => {
                check_reference(&r.xml10_content())?;
                match stack.last() {
                    Some(Place::Decision) => decision_clean = false,
                    None => return Err(xml_error(&reader)),
                    _ => {}
                }
            }
            Event::DocType(_) => return Err(MitzError::Dtd),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(xml_error(&reader));
    }
    if !seen_root {
        return Err(MitzError::NotSoap);
    }
    if bodies != 1 {
        return Err(MitzError::Body);
    }
    if fault.is_some() {
        return Err(MitzError::SoapFault {
            code: FaultCode::from_text(&fault_code_text),
        });
    }
    match responses {
        0 => return Err(MitzError::MissingResponse),
        1 => {}
        _ => return Err(MitzError::SeveralResponses),
    }
    match results {
        0 => return Err(MitzError::MissingResult),
        1 => {}
        _ => return Err(MitzError::SeveralResults),
    }
    match decisions {
        0 => return Err(MitzError::MissingDecision),
        1 => {}
        _ => return Err(MitzError::SeveralDecisions),
    }
    let decision = if decision_clean {
        MitzDecision::from_text(decision_text.trim_matches([' ', '\t', '\n', '\r']))
    } else {
        None
    };
    decision
        .map(|decision| MitzAnswer {
            decision,
            signature_present,
        })
        .ok_or(MitzError::UnknownDecision)
}

/// Keeps at most a few dozen characters of a text the parser compares: enough for any
/// valid value, so a huge text costs no memory.
fn push_bounded(into: &mut String, text: &str) {
    for c in text.chars() {
        if into.len() >= 64 {
            break;
        }
        into.push(c);
    }
}

fn xacml(ns: Option<&str>) -> bool {
    ns.is_none() || ns == Some(XACML3_NS)
}

fn in_body(stack: &[Place]) -> bool {
    stack.contains(&Place::Body)
        && !stack.iter().any(|p| {
            matches!(
                p,
                Place::Fault | Place::Response | Place::Result | Place::Decision
            )
        })
}

/// Reads a closed question back from its envelope: what the Mitz stand-in of the tests
/// does, and the other half of the round-trip property. Checks the same as
/// [`build_request`] does: every attribute once, known ids only, valid inputs.
pub fn parse_request(body: &[u8]) -> Result<MitzRequest, MitzError> {
    let text = utf8(body)?;
    let mut reader = NsReader::from_str(text);
    let mut values: Vec<(&'static str, Value)> = Vec::new();
    let mut attribute: Option<&'static str> = None;
    let mut header_text: Option<&'static str> = None;
    let mut to = String::new();
    let mut message_id = String::new();
    let mut depth = 0usize;
    loop {
        let step = reader
            .read_resolved_event()
            .map(|(resolved, event)| (namespace(&resolved).map(str::to_owned), event));
        let Ok((ns, event)) = step else {
            return Err(xml_error(&reader));
        };
        match event {
            Event::Start(ref start) | Event::Empty(ref start) => {
                if matches!(event, Event::Start(_)) {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(MitzError::TooDeep);
                    }
                }
                let local = start.local_name();
                match local.as_ref() {
                    "Attribute" if ns.as_deref() == Some(XACML3_NS) => {
                        let id = attr(start, "AttributeId")?;
                        attribute = Some(field_of(&id).ok_or(MitzError::Attribute {
                            attribute: "AttributeId",
                            problem: "unknown",
                        })?);
                    }
                    "InstanceIdentifier" | "CodedValue" if ns.as_deref() == Some(HL7_NS) => {
                        let field = attribute.ok_or(MitzError::Attribute {
                            attribute: "AttributeValue",
                            problem: "outside an attribute",
                        })?;
                        if values.iter().any(|(f, _)| *f == field) {
                            return Err(MitzError::Attribute {
                                attribute: field,
                                problem: "repeated",
                            });
                        }
                        let value = if local.as_ref() == "CodedValue" {
                            Value::Code(MitzCode::new(
                                attr(start, "code")?,
                                attr(start, "codeSystem")?,
                            ))
                        } else {
                            Value::Id(attr(start, "root")?, attr(start, "extension")?)
                        };
                        values.push((field, value));
                    }
                    "To" if ns.as_deref() == Some(WSA_NS) => header_text = Some("to"),
                    "MessageID" if ns.as_deref() == Some(WSA_NS) => {
                        header_text = Some("message_id")
                    }
                    _ => {}
                }
            }
            Event::End(ref end) => {
                depth = depth.saturating_sub(1);
                if end.local_name().as_ref() == "Attribute" {
                    attribute = None;
                }
                header_text = None;
            }
            Event::Text(ref t) => match header_text {
                Some("to") => to.push_str(&t.xml10_content()),
                Some(_) => message_id.push_str(&t.xml10_content()),
                None => {}
            },
            Event::GeneralRef(ref r) => {
                let name = r.xml10_content();
                check_reference(&name)?;
                let resolved = quick_xml::escape::unescape(&format!("&{name};"))
                    .map_err(|_| MitzError::Entity)?
                    .into_owned();
                match header_text {
                    Some("to") => to.push_str(&resolved),
                    Some(_) => message_id.push_str(&resolved),
                    None => {}
                }
            }
            Event::DocType(_) => return Err(MitzError::Dtd),
            Event::Eof => break,
            _ => {}
        }
    }
    let mut take = |field: &'static str| -> Option<Value> {
        let index = values.iter().position(|(f, _)| *f == field)?;
        Some(values.swap_remove(index).1)
    };
    let id = |value: Option<Value>,
              field: &'static str,
              root: &str|
     -> Result<Option<String>, MitzError> {
        match value {
            None => Ok(None),
            Some(Value::Id(r, extension)) if r == root => Ok(Some(extension)),
            Some(_) => Err(MitzError::Attribute {
                attribute: field,
                problem: "of the wrong type or root",
            }),
        }
    };
    let code = |value: Option<Value>, field: &'static str| -> Result<MitzCode, MitzError> {
        match value {
            Some(Value::Code(code)) => Ok(code),
            None => Err(MitzError::Attribute {
                attribute: field,
                problem: "missing",
            }),
            Some(_) => Err(MitzError::Attribute {
                attribute: field,
                problem: "of the wrong type or root",
            }),
        }
    };
    let required = |value: Option<String>, field: &'static str| {
        value.ok_or(MitzError::Attribute {
            attribute: field,
            problem: "missing",
        })
    };
    let question = MitzQuestion {
        patient_bsn: required(
            id(take("patient_bsn"), "patient_bsn", BSN_ROOT)?,
            "patient_bsn",
        )?,
        author_ura: required(
            id(take("author_ura"), "author_ura", URA_ROOT)?,
            "author_ura",
        )?,
        author_facility_type: code(take("author_facility_type"), "author_facility_type")?,
        event_code: code(take("event_code"), "event_code")?,
        role: code(take("role"), "role")?,
        requesting_practitioner: id(
            take("requesting_practitioner"),
            "requesting_practitioner",
            UZI_ROOT,
        )?,
        mandated: id(take("mandated"), "mandated", UZI_ROOT)?,
        requesting_ura: required(
            id(take("requesting_ura"), "requesting_ura", URA_ROOT)?,
            "requesting_ura",
        )?,
        requesting_facility_type: code(
            take("requesting_facility_type"),
            "requesting_facility_type",
        )?,
        purpose_of_use: code(take("purpose_of_use"), "purpose_of_use")?,
    };
    question.validate()?;
    Ok(MitzRequest {
        question,
        to,
        message_id,
    })
}

const WSA_NS: &str = "http://www.w3.org/2005/08/addressing";

enum Value {
    Id(String, String),
    Code(MitzCode),
}

fn field_of(attribute_id: &str) -> Option<&'static str> {
    Some(match attribute_id {
        ID_RESOURCE => "patient_bsn",
        ID_AUTHOR_FACILITY_TYPE => "author_facility_type",
        ID_AUTHOR_INSTITUTION => "author_ura",
        ID_EVENT_CODE => "event_code",
        ID_ROLE => "role",
        ID_MANDATED => "mandated",
        ID_PROVIDER => "requesting_practitioner",
        ID_PROVIDER_INSTITUTION => "requesting_ura",
        ID_CONSULTING_FACILITY_TYPE => "requesting_facility_type",
        ID_PURPOSE_OF_USE => "purpose_of_use",
        _ => return None,
    })
}

fn attr(start: &quick_xml::events::BytesStart<'_>, key: &'static str) -> Result<String, MitzError> {
    let missing = || MitzError::Attribute {
        attribute: "an XML attribute",
        problem: "missing",
    };
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|_| MitzError::Xml { at: 0 })?;
        if attribute.key.as_ref() == key {
            return attribute
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map(|v| v.into_owned())
                .map_err(|_| MitzError::Entity);
        }
    }
    Err(missing())
}

#[cfg(test)]
mod tests;
