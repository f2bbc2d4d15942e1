//! The client certificate of a mutual-TLS connection, as policies and sender-constraint
//! checks see it.
//!
//! # Why
//!
//! RFC 8705 binds an access token to the client certificate it was issued to: the token
//! carries `cnf: {"x5t#S256": "<base64url SHA-256 of the certificate's DER>"}`, and a
//! resource server must only accept the token over a mutual-TLS connection that presented
//! that same certificate. Sluis does not terminate TLS itself; the gateway in front of it
//! does, so the certificate reaches Sluis second-hand and this module turns it into a
//! [`ClientCertificate`]: the [`thumbprint`](ClientCertificate::thumbprint) to compare with
//! `cnf.x5t#S256`, and the names a policy may want to match on (subject attributes,
//! subject alternative names, and the `otherName` identifiers that Dutch UZI-pas and
//! PKIoverheid certificates carry).
//!
//! Nothing here checks that the certificate is trusted, unexpired or unrevoked: the
//! gateway that terminated TLS did that (or was configured not to). `not_before` and
//! `not_after` are exposed so a policy can still look.
//!
//! # Where certificates come from
//!
//! * **Envoy ext_authz**: the `CheckRequest` carries the peer certificate as URL-encoded
//!   PEM; the door percent-decodes it into `AccessRequest.source.certificate`, which goes
//!   to [`ClientCertificate::from_pem`].
//! * **`x-forwarded-client-cert` (XFCC)**, Envoy's forwarding header, for gateways that
//!   pass it on: [`from_xfcc`]. The value is a comma-separated list of elements, one per
//!   proxy; each proxy *appends* an element describing the client of its own TLS
//!   connection. Only the **last** element was written by the proxy directly in front of
//!   us, so that is the one used; the earlier ones describe hops further away, which only
//!   that proxy vouched for (with `forward_client_cert_details: SANITIZE_SET` there is
//!   exactly one element anyway). If the last element carries no `Cert` (nor `Chain`),
//!   there is no certificate: earlier elements are never used as a fallback.
//! * **RFC 9440 `Client-Cert`**, a structured-field byte sequence `:<base64 DER>:`:
//!   [`from_client_cert_header`].
//!
//! Whichever header is used, the gateway must remove any copy the client sent: a header
//! is only as trustworthy as the proxy that set it. For XFCC, also note that Envoy quotes
//! `Cert`, `Chain` and `Subject` but writes `URI` and `DNS` values as they are in the
//! certificate: a URI SAN containing `,` or `;` can add keys or elements to the header. An
//! element with two `Cert`s is refused, but the safest configurations are the ext_authz
//! peer certificate, or XFCC with only `cert` (or `cert` and `subject`) details set.
//!
//! Every input is size-bounded ([`MAX_INPUT_LEN`]) and every malformed input is an error,
//! never a panic.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::{self, PemObject};
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};
use x509_parser::asn1_rs::{Any, Class, FromDer, Oid, Tag, ToDer};
use x509_parser::extensions::GeneralName;
use x509_parser::x509::X509Name;

/// The largest certificate (PEM or DER) or certificate header value accepted, in bytes.
///
/// Real client certificates are a few KiB; anything larger is refused before any parsing.
pub const MAX_INPUT_LEN: usize = 64 * 1024;

/// A client certificate as policies and sender-constraint checks see it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientCertificate {
    /// base64url (no padding) SHA-256 of the DER: RFC 8705 `x5t#S256`.
    pub thumbprint: String,
    /// The subject as an RFC 4514-style string, most specific attribute first and
    /// separated by `", "`, e.g. `"CN=client.example.nl, O=Zorg BV, C=NL"`. Attribute
    /// names are those of [`subject_attributes`](Self::subject_attributes).
    pub subject: String,
    /// The issuer, formatted like [`subject`](Self::subject).
    pub issuer: String,
    /// Subject attributes by short name (`CN`, `O`, `OU`, `C`, `L`, `ST`, `serialNumber`,
    /// `organizationIdentifier`, ...; the dotted OID for names not known here), values in
    /// certificate order. Values that are not strings appear as `#` and the hex of their
    /// DER, as in RFC 4514.
    pub subject_attributes: BTreeMap<String, Vec<String>>,
    /// `dNSName` subject alternative names.
    pub dns_names: Vec<String>,
    /// `uniformResourceIdentifier` subject alternative names (e.g. SPIFFE IDs).
    pub uris: Vec<String>,
    /// `rfc822Name` subject alternative names.
    pub emails: Vec<String>,
    /// `otherName` subject alternative names as (OID dotted string, value). The value is
    /// the text when it is a string type, otherwise `#` and the hex of its DER. UZI-pas and
    /// PKIoverheid certificates carry identifiers here (OID `2.5.5.5` for UZI).
    pub other_names: Vec<(String, String)>,
    /// The serial number in upper-case hex without separators or leading zero bytes, as
    /// `openssl x509 -noout -serial` prints it.
    pub serial: String,
    /// Start of validity, unix seconds.
    pub not_before: i64,
    /// End of validity, unix seconds.
    pub not_after: i64,
}

/// Why a client certificate could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CertificateError {
    /// The input is larger than [`MAX_INPUT_LEN`].
    #[error("{what} is too large: {len} bytes, at most {MAX_INPUT_LEN} accepted")]
    TooLarge { what: &'static str, len: usize },
    /// The PEM text holds no readable `CERTIFICATE` block.
    #[error("client certificate is not valid PEM: {0}")]
    Pem(&'static str),
    /// The DER is not an X.509 certificate.
    #[error("client certificate does not parse: {0}")]
    Parse(String),
    /// An `x-forwarded-client-cert` value that is not well-formed.
    #[error("x-forwarded-client-cert header is malformed: {0}")]
    Xfcc(&'static str),
    /// A `Client-Cert` value that is not an RFC 9440 byte sequence.
    #[error("client-cert header is malformed: {0}")]
    ClientCertHeader(&'static str),
}

impl ClientCertificate {
    /// Reads the first `CERTIFICATE` block of PEM text; other blocks are skipped.
    pub fn from_pem(pem: &str) -> Result<Self, CertificateError> {
        Self::from_pem_bytes(pem.as_bytes())
    }

    fn from_pem_bytes(pem: &[u8]) -> Result<Self, CertificateError> {
        check_len("client certificate PEM", pem.len())?;
        let der = CertificateDer::from_pem_slice(pem).map_err(|e| {
            CertificateError::Pem(match e {
                pem::Error::NoItemsFound => "no CERTIFICATE block",
                pem::Error::MissingSectionEnd { .. } => "a block has no END line",
                pem::Error::IllegalSectionStart { .. } => "malformed BEGIN line",
                pem::Error::Base64Decode(_) => "bad base64 in the CERTIFICATE block",
                pem::Error::SectionTooLarge => "block too large",
                _ => "unreadable",
            })
        })?;
        Self::from_der(der.as_ref())
    }

    /// Reads a DER-encoded X.509 certificate. Trailing bytes are refused.
    pub fn from_der(der: &[u8]) -> Result<Self, CertificateError> {
        check_len("client certificate", der.len())?;
        let parse_err = |e: x509_parser::nom::Err<x509_parser::error::X509Error>| match e {
            x509_parser::nom::Err::Incomplete(_) => {
                CertificateError::Parse("truncated DER".to_owned())
            }
            x509_parser::nom::Err::Error(e) | x509_parser::nom::Err::Failure(e) => {
                CertificateError::Parse(e.to_string())
            }
        };
        let (rest, cert) = x509_parser::parse_x509_certificate(der).map_err(parse_err)?;
        if !rest.is_empty() {
            return Err(CertificateError::Parse(format!(
                "{} bytes of trailing data after the certificate",
                rest.len()
            )));
        }

        let mut subject_attributes: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for attr in cert.subject().iter_attributes() {
            subject_attributes
                .entry(attribute_name(attr.attr_type()))
                .or_default()
                .push(attribute_text(attr.attr_value()));
        }

        let mut dns_names = Vec::new();
        let mut uris = Vec::new();
        let mut emails = Vec::new();
        let mut other_names = Vec::new();
        let san = cert
            .subject_alternative_name()
            .map_err(|e| CertificateError::Parse(format!("subject alternative names: {e}")))?;
        for name in san.iter().flat_map(|ext| ext.value.general_names.iter()) {
            match name {
                GeneralName::DNSName(s) => dns_names.push((*s).to_owned()),
                GeneralName::URI(s) => uris.push((*s).to_owned()),
                GeneralName::RFC822Name(s) => emails.push((*s).to_owned()),
                GeneralName::OtherName(oid, value) => {
                    other_names.push((oid.to_id_string(), other_name_text(value)));
                }
                _ => {}
            }
        }

        let validity = cert.validity();
        Ok(ClientCertificate {
            thumbprint: URL_SAFE_NO_PAD.encode(Sha256::digest(der)),
            subject: format_name(cert.subject()),
            issuer: format_name(cert.issuer()),
            subject_attributes,
            dns_names,
            uris,
            emails,
            other_names,
            serial: serial_hex(cert.raw_serial()),
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
        })
    }

    /// The view policies get as CEL `source.certificate`: a JSON object with the fields
    /// above, `other_names` as `[{"oid": ..., "value": ...}]`.
    pub fn to_json(&self) -> Json {
        let other_names: Vec<Json> = self
            .other_names
            .iter()
            .map(|(oid, value)| json!({ "oid": oid, "value": value }))
            .collect();
        json!({
            "thumbprint": self.thumbprint,
            "subject": self.subject,
            "issuer": self.issuer,
            "subject_attributes": self.subject_attributes,
            "dns_names": self.dns_names,
            "uris": self.uris,
            "emails": self.emails,
            "other_names": other_names,
            "serial": self.serial,
            "not_before": self.not_before,
            "not_after": self.not_after,
        })
    }
}

/// The client certificate from an `x-forwarded-client-cert` (XFCC) header value, if it
/// has one.
///
/// Only the last element is read: it is the one the nearest proxy appended about its own
/// client (see the module documentation). Its `Cert` (URL-encoded PEM) is used, or else
/// the first certificate of its `Chain` (the leaf). `Ok(None)` when the value is empty or
/// the last element has neither. Keys are case-insensitive; values may be double-quoted,
/// with `\"` standing for a quote inside.
pub fn from_xfcc(value: &str) -> Result<Option<ClientCertificate>, CertificateError> {
    check_len("x-forwarded-client-cert header", value.len())?;
    let elements = parse_xfcc(value)?;
    let Some(last) = elements.last() else {
        return Ok(None);
    };
    let lookup = |key: &str| -> Result<Option<&str>, CertificateError> {
        let mut found = last.iter().filter(|(k, _)| k.eq_ignore_ascii_case(key));
        let first = found.next().map(|(_, v)| v.as_str());
        if found.next().is_some() {
            return Err(CertificateError::Xfcc(if key == "Cert" {
                "more than one Cert in an element"
            } else {
                "more than one Chain in an element"
            }));
        }
        Ok(first)
    };
    let encoded = match lookup("Cert")? {
        Some(cert) => cert,
        None => match lookup("Chain")? {
            Some(chain) => chain,
            None => return Ok(None),
        },
    };
    let pem: Vec<u8> = percent_encoding::percent_decode_str(encoded).collect();
    ClientCertificate::from_pem_bytes(&pem).map(Some)
}

/// The client certificate from an RFC 9440 `Client-Cert` header value: a structured-field
/// byte sequence, `:` base64 of the DER `:`. Parameters after it are ignored.
pub fn from_client_cert_header(value: &str) -> Result<ClientCertificate, CertificateError> {
    check_len("client-cert header", value.len())?;
    let value = value.trim_matches(|c| c == ' ' || c == '\t');
    let Some(inner) = value.strip_prefix(':') else {
        return Err(CertificateError::ClientCertHeader(
            "not a byte sequence: expected ':<base64 DER>:'",
        ));
    };
    let Some((b64, rest)) = inner.split_once(':') else {
        return Err(CertificateError::ClientCertHeader(
            "byte sequence has no closing ':'",
        ));
    };
    let rest = rest.trim_start_matches([' ', '\t']);
    if rest.starts_with(',') {
        return Err(CertificateError::ClientCertHeader(
            "more than one certificate (a list, not a single item)",
        ));
    }
    if !(rest.is_empty() || rest.starts_with(';')) {
        return Err(CertificateError::ClientCertHeader(
            "unexpected text after the byte sequence",
        ));
    }
    if b64.is_empty() {
        return Err(CertificateError::ClientCertHeader("empty byte sequence"));
    }
    // RFC 8941 §4.2.7: parsers should not fail when "=" padding is missing.
    const SF_BINARY: GeneralPurpose = GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let der = SF_BINARY
        .decode(b64)
        .map_err(|_| CertificateError::ClientCertHeader("byte sequence is not valid base64"))?;
    ClientCertificate::from_der(&der)
}

fn check_len(what: &'static str, len: usize) -> Result<(), CertificateError> {
    if len > MAX_INPUT_LEN {
        return Err(CertificateError::TooLarge { what, len });
    }
    Ok(())
}

/// Splits an XFCC value into elements of (key, unquoted value) pairs.
///
/// `,` separates elements and `;` pairs, except inside double quotes; `\"` and `\\` are
/// unescaped inside quotes. Spaces and tabs around keys, values and separators are
/// ignored. Linear in the input.
fn parse_xfcc(value: &str) -> Result<Vec<Vec<(String, String)>>, CertificateError> {
    let mut elements: Vec<Vec<(String, String)>> = Vec::new();
    if value.trim_matches([' ', '\t']).is_empty() {
        return Ok(elements);
    }
    let mut element: Vec<(String, String)> = Vec::new();
    let mut chars = value.chars().peekable();
    let skip_ows = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
    };
    loop {
        // A key, up to '='.
        skip_ows(&mut chars);
        let mut key = String::new();
        loop {
            match chars.next() {
                Some('=') => break,
                None | Some(';') | Some(',') => {
                    return Err(CertificateError::Xfcc(if key.trim().is_empty() {
                        "empty element or pair"
                    } else {
                        "a key has no '=' and value"
                    }));
                }
                Some('"') => return Err(CertificateError::Xfcc("a quote inside a key")),
                Some(c) => key.push(c),
            }
        }
        let key = key.trim_end_matches([' ', '\t']).to_owned();
        if key.is_empty() {
            return Err(CertificateError::Xfcc("a value has no key"));
        }

        // Its value, quoted or up to ';' / ','.
        skip_ows(&mut chars);
        let mut val = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next() {
                    None => return Err(CertificateError::Xfcc("unbalanced quotes")),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c @ ('"' | '\\')) => val.push(c),
                        Some(c) => {
                            val.push('\\');
                            val.push(c);
                        }
                        None => return Err(CertificateError::Xfcc("unbalanced quotes")),
                    },
                    Some(c) => val.push(c),
                }
            }
            skip_ows(&mut chars);
            if !matches!(chars.peek(), None | Some(';') | Some(',')) {
                return Err(CertificateError::Xfcc("text after a quoted value"));
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ';' && *c != ',') {
                if c == '"' {
                    return Err(CertificateError::Xfcc("a quote inside an unquoted value"));
                }
                val.push(c);
            }
            val.truncate(val.trim_end_matches([' ', '\t']).len());
        }
        element.push((key, val));

        match chars.next() {
            Some(';') => {}
            Some(',') => elements.push(std::mem::take(&mut element)),
            _ => {
                elements.push(element);
                return Ok(elements);
            }
        }
    }
}

/// The short name of a DN attribute type as OpenSSL prints it (RFC 4514 names where
/// those exist), or the dotted OID.
fn attribute_name(oid: &Oid<'_>) -> String {
    let dotted = oid.to_id_string();
    let name = match dotted.as_str() {
        "2.5.4.3" => "CN",
        "2.5.4.4" => "SN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "title",
        "2.5.4.15" => "businessCategory",
        "2.5.4.17" => "postalCode",
        "2.5.4.42" => "GN",
        "2.5.4.43" => "initials",
        "2.5.4.44" => "generationQualifier",
        "2.5.4.46" => "dnQualifier",
        "2.5.4.65" => "pseudonym",
        "2.5.4.97" => "organizationIdentifier",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.2.840.113549.1.9.1" => "emailAddress",
        "1.3.6.1.4.1.311.60.2.1.3" => "jurisdictionC",
        _ => return dotted,
    };
    name.to_owned()
}

/// The text of an ASN.1 string value, or `None` when it is not a (decodable) string.
fn asn1_text(any: &Any<'_>) -> Option<String> {
    if any.header.class() != Class::Universal {
        return None;
    }
    let data = any.data;
    match any.header.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString => std::str::from_utf8(data).ok().map(str::to_owned),
        // T.61 is approximated as Latin-1, as OpenSSL does.
        Tag::TeletexString => Some(data.iter().map(|&b| char::from(b)).collect()),
        Tag::BmpString => {
            if !data.len().is_multiple_of(2) {
                return None;
            }
            let units = data
                .as_chunks::<2>()
                .0
                .iter()
                .map(|&pair| u16::from_be_bytes(pair));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        Tag::UniversalString => {
            if !data.len().is_multiple_of(4) {
                return None;
            }
            data.as_chunks::<4>()
                .0
                .iter()
                .map(|&quad| char::from_u32(u32::from_be_bytes(quad)))
                .collect()
        }
        _ => None,
    }
}

/// `#` and the hex of the DER of a value (RFC 4514 §2.4 for non-string values).
fn der_hex(any: &Any<'_>) -> String {
    match any.to_der_vec() {
        Ok(der) => format!("#{}", hex::encode(&der)),
        Err(_) => format!("#{}", hex::encode(any.data)),
    }
}

fn attribute_text(any: &Any<'_>) -> String {
    asn1_text(any).unwrap_or_else(|| der_hex(any))
}

/// The value of an `otherName`: `[0] EXPLICIT` around the value, which is usually a string.
fn other_name_text(explicit: &[u8]) -> String {
    let Ok((_, outer)) = Any::from_der(explicit) else {
        return format!("#{}", hex::encode(explicit));
    };
    if outer.header.class() != Class::ContextSpecific || outer.header.tag() != Tag(0) {
        return der_hex(&outer);
    }
    match Any::from_der(outer.data) {
        Ok((_, inner)) => attribute_text(&inner),
        Err(_) => format!("#{}", hex::encode(outer.data)),
    }
}

/// An RFC 4514-style string: RDNs last to first, `", "` between them, `+` between the
/// attributes of a multi-valued RDN, special characters escaped.
fn format_name(name: &X509Name<'_>) -> String {
    let mut out = String::new();
    for (i, rdn) in name
        .iter_rdn()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .enumerate()
    {
        if i > 0 {
            out.push_str(", ");
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            out.push_str(&attribute_name(attr.attr_type()));
            out.push('=');
            match asn1_text(attr.attr_value()) {
                Some(text) => escape_dn_value(&text, &mut out),
                None => out.push_str(&der_hex(attr.attr_value())),
            }
        }
    }
    out
}

/// RFC 4514 §2.4 escaping, plus hex escapes for control characters so that a subject is
/// always safe to log.
fn escape_dn_value(value: &str, out: &mut String) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\{b:02x}");
                }
            }
            c => out.push(c),
        }
    }
}

fn serial_hex(raw: &[u8]) -> String {
    let start = raw
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(raw.len().saturating_sub(1));
    hex::encode_upper(raw.get(start..).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    use rcgen::string::{BmpString, TeletexString};
    use rcgen::{
        CertificateParams, CustomExtension, DnType, DnValue, Issuer, KeyPair, SanType,
        SerialNumber, date_time_ymd,
    };

    const JAN_2024: i64 = 1_704_067_200;
    const JAN_2034: i64 = 2_019_686_400;

    fn ca() -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CountryName, "NL");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Sluis Test CA");
        params
            .distinguished_name
            .push(DnType::CommonName, "Sluis Test Root");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert, Issuer::new(params, key))
    }

    /// A client certificate signed by [`ca`] with every field this module reads.
    fn client_params() -> CertificateParams {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            DnType::CountryName,
            DnValue::PrintableString("NL".try_into().unwrap()),
        );
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Zorg, Welzijn & Co");
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, "Apotheek");
        params
            .distinguished_name
            .push(DnType::CommonName, "client.example.nl");
        params.distinguished_name.push(
            DnType::CustomDnType(vec![2, 5, 4, 5]),
            DnValue::PrintableString("00000001234567".try_into().unwrap()),
        );
        params
            .distinguished_name
            .push(DnType::CustomDnType(vec![2, 5, 4, 97]), "NTRNL-12345678");
        params.subject_alt_names = vec![
            SanType::DnsName("client.example.nl".try_into().unwrap()),
            SanType::DnsName("alt.example.nl".try_into().unwrap()),
            SanType::URI("spiffe://sluis.example/client".try_into().unwrap()),
            SanType::Rfc822Name("beheer@example.nl".try_into().unwrap()),
            SanType::OtherName((
                vec![1, 3, 6, 1, 4, 1, 311, 20, 2, 3],
                "user@example.nl".into(),
            )),
        ];
        params.serial_number = Some(SerialNumber::from(vec![0x01, 0x02, 0xA3]));
        params.not_before = date_time_ymd(2024, 1, 1);
        params.not_after = date_time_ymd(2034, 1, 1);
        params
    }

    fn client() -> rcgen::Certificate {
        let (_, issuer) = ca();
        let key = KeyPair::generate().unwrap();
        client_params().signed_by(&key, &issuer).unwrap()
    }

    fn independent_thumbprint(der: &[u8]) -> String {
        let digest = Sha256::digest(der);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
    }

    /// A DER TLV, for hand-built extensions.
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else if len <= 0xff {
            out.extend([0x81, len as u8]);
        } else {
            out.extend([0x82, (len >> 8) as u8, len as u8]);
        }
        out.extend_from_slice(content);
        out
    }

    #[test]
    fn ca_signed_certificate_has_every_field() {
        let cert = client();
        let parsed = ClientCertificate::from_der(cert.der()).unwrap();
        assert_eq!(parsed.thumbprint, independent_thumbprint(cert.der()));
        assert_eq!(
            parsed.subject,
            "organizationIdentifier=NTRNL-12345678, serialNumber=00000001234567, \
             CN=client.example.nl, OU=Apotheek, O=Zorg\\, Welzijn & Co, C=NL"
        );
        assert_eq!(parsed.issuer, "CN=Sluis Test Root, O=Sluis Test CA, C=NL");
        let attrs = |k: &str| {
            parsed
                .subject_attributes
                .get(k)
                .cloned()
                .unwrap_or_default()
        };
        assert_eq!(attrs("C"), ["NL"]);
        assert_eq!(attrs("O"), ["Zorg, Welzijn & Co"]);
        assert_eq!(attrs("OU"), ["Apotheek"]);
        assert_eq!(attrs("CN"), ["client.example.nl"]);
        assert_eq!(attrs("serialNumber"), ["00000001234567"]);
        assert_eq!(attrs("organizationIdentifier"), ["NTRNL-12345678"]);
        assert_eq!(parsed.subject_attributes.len(), 6);
        assert_eq!(parsed.dns_names, ["client.example.nl", "alt.example.nl"]);
        assert_eq!(parsed.uris, ["spiffe://sluis.example/client"]);
        assert_eq!(parsed.emails, ["beheer@example.nl"]);
        assert_eq!(
            parsed.other_names,
            [(
                "1.3.6.1.4.1.311.20.2.3".to_owned(),
                "user@example.nl".to_owned()
            )]
        );
        assert_eq!(parsed.serial, "0102A3");
        assert_eq!(parsed.not_before, JAN_2024);
        assert_eq!(parsed.not_after, JAN_2034);
    }

    #[test]
    fn self_signed_certificate() {
        let (cert, _) = ca();
        let parsed = ClientCertificate::from_der(cert.der()).unwrap();
        assert_eq!(parsed.subject, "CN=Sluis Test Root, O=Sluis Test CA, C=NL");
        assert_eq!(parsed.subject, parsed.issuer);
        assert!(parsed.dns_names.is_empty() && parsed.uris.is_empty());
        assert!(parsed.emails.is_empty() && parsed.other_names.is_empty());
        assert_eq!(parsed.thumbprint, independent_thumbprint(cert.der()));
        assert!(!parsed.serial.is_empty() && !parsed.serial.starts_with("00"));
        assert!(parsed.not_before < parsed.not_after);
    }

    #[test]
    fn thumbprint_is_base64url_sha256_of_the_der() {
        let cert = client();
        let parsed = ClientCertificate::from_pem(&cert.pem()).unwrap();
        // base64url without padding of 32 bytes: 43 characters.
        assert_eq!(parsed.thumbprint.len(), 43);
        assert!(!parsed.thumbprint.contains(['=', '+', '/']));
        let digest = Sha256::digest(cert.der().as_ref());
        let std_b64 = STANDARD.encode(digest);
        let expected = std_b64
            .trim_end_matches('=')
            .replace('+', "-")
            .replace('/', "_");
        assert_eq!(parsed.thumbprint, expected);
    }

    #[test]
    fn pem_and_der_agree_and_the_first_certificate_block_wins() {
        let cert = client();
        let (ca_cert, _) = ca();
        let from_der = ClientCertificate::from_der(cert.der()).unwrap();
        assert_eq!(ClientCertificate::from_pem(&cert.pem()).unwrap(), from_der);
        // Text and other blocks before it are skipped; a later certificate is ignored.
        let key = KeyPair::generate().unwrap().serialize_pem();
        let bundle = format!("subject=whatever\n{key}{}{}", cert.pem(), ca_cert.pem());
        assert_eq!(ClientCertificate::from_pem(&bundle).unwrap(), from_der);
        // CRLF line endings.
        let crlf = cert.pem().replace('\n', "\r\n");
        assert_eq!(ClientCertificate::from_pem(&crlf).unwrap(), from_der);
    }

    #[test]
    fn ia5_other_name_as_on_an_uzi_pas() {
        let uzi = "2.16.528.1.1003.1.3.5.5.2-1-12345678-Z-90000123-01.015-00000000";
        // GeneralNames { otherName { 2.5.5.5, [0] IA5String }, dNSName }
        let mut other = tlv(0x06, &[0x55, 0x05, 0x05]);
        other.extend(tlv(0xa0, &tlv(0x16, uzi.as_bytes())));
        let mut names = tlv(0xa0, &other);
        names.extend(tlv(0x82, b"uzi.example.nl"));
        // A non-string otherName value: [0] INTEGER 5.
        let mut odd = tlv(0x06, &[0x2a, 0x03]);
        odd.extend(tlv(0xa0, &tlv(0x02, &[0x05])));
        names.extend(tlv(0xa0, &odd));
        let san = tlv(0x30, &names);

        let mut params = CertificateParams::default();
        params.custom_extensions = vec![CustomExtension::from_oid_content(&[2, 5, 29, 17], san)];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let parsed = ClientCertificate::from_der(cert.der()).unwrap();
        assert_eq!(
            parsed.other_names,
            [
                ("2.5.5.5".to_owned(), uzi.to_owned()),
                ("1.2.3".to_owned(), "#020105".to_owned())
            ]
        );
        assert_eq!(parsed.dns_names, ["uzi.example.nl"]);
    }

    #[test]
    fn string_types_and_repeated_attributes() {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            DnType::OrganizationName,
            DnValue::BmpString(BmpString::try_from("Zürich Ω").unwrap()),
        );
        params.distinguished_name.push(
            DnType::LocalityName,
            DnValue::TeletexString(TeletexString::try_from("Den Haag").unwrap()),
        );
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, "Eerste");
        // Placeholder with an OID of the same length as OU's, patched below into a second OU.
        params
            .distinguished_name
            .push(DnType::CustomDnType(vec![2, 5, 4, 99]), "Tweede");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let mut der = cert.der().to_vec();
        let placeholder = [0x06, 0x03, 0x55, 0x04, 0x63];
        let mut patched = 0;
        for i in 0..der.len() - placeholder.len() {
            if der[i..i + placeholder.len()] == placeholder {
                der[i + 4] = 0x0b;
                patched += 1;
            }
        }
        assert_eq!(patched, 2, "subject and issuer");

        let parsed = ClientCertificate::from_der(&der).unwrap();
        assert_eq!(parsed.subject_attributes["O"], ["Zürich Ω"]);
        assert_eq!(parsed.subject_attributes["L"], ["Den Haag"]);
        assert_eq!(parsed.subject_attributes["OU"], ["Eerste", "Tweede"]);
        assert_eq!(
            parsed.subject,
            "OU=Tweede, OU=Eerste, L=Den Haag, O=Zürich Ω"
        );
        assert_eq!(parsed.thumbprint, independent_thumbprint(&der));
    }

    #[test]
    fn names_are_formatted_and_escaped_like_rfc_4514() {
        // Name { SET { CN=" #a,b+c;<>\"\\ ", O=x } (multi-valued), SET { 1.2.3=INTEGER 1 },
        //        SET { C=NL } }
        let cn = tlv(0x0c, b"#a,b+c;<>\"\\\n ");
        let mut atv_cn = tlv(0x06, &[0x55, 0x04, 0x03]);
        atv_cn.extend(cn);
        let mut atv_o = tlv(0x06, &[0x55, 0x04, 0x0a]);
        atv_o.extend(tlv(0x0c, b"x"));
        let mut set1 = tlv(0x30, &atv_cn);
        set1.extend(tlv(0x30, &atv_o));
        let mut atv_odd = tlv(0x06, &[0x2a, 0x03]);
        atv_odd.extend(tlv(0x02, &[0x01]));
        let mut atv_c = tlv(0x06, &[0x55, 0x04, 0x06]);
        atv_c.extend(tlv(0x13, b"NL"));
        let mut rdns = tlv(0x31, &set1);
        rdns.extend(tlv(0x31, &tlv(0x30, &atv_odd)));
        rdns.extend(tlv(0x31, &tlv(0x30, &atv_c)));
        let name_der = tlv(0x30, &rdns);
        let (rest, name) = X509Name::from_der(&name_der).unwrap();
        assert!(rest.is_empty());
        assert_eq!(
            format_name(&name),
            "C=NL, 1.2.3=#020101, CN=\\#a\\,b\\+c\\;\\<\\>\\\"\\\\\\0a\\ +O=x"
        );
        let empty = tlv(0x30, &[]);
        let (_, name) = X509Name::from_der(&empty).unwrap();
        assert_eq!(format_name(&name), "");
    }

    #[test]
    fn serials_drop_leading_zero_bytes() {
        assert_eq!(serial_hex(&[0x00, 0x80, 0x01]), "8001");
        assert_eq!(serial_hex(&[0x00]), "00");
        assert_eq!(serial_hex(&[0x7f, 0x00]), "7F00");
        assert_eq!(serial_hex(&[]), "");

        let mut params = CertificateParams::default();
        params.serial_number = Some(SerialNumber::from(vec![0x80, 0x01]));
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            ClientCertificate::from_der(cert.der()).unwrap().serial,
            "8001"
        );
    }

    #[test]
    fn json_view_for_policies() {
        let parsed = ClientCertificate::from_der(client().der()).unwrap();
        let view = parsed.to_json();
        assert_eq!(view["thumbprint"], parsed.thumbprint);
        assert_eq!(view["subject"], parsed.subject);
        assert_eq!(view["issuer"], "CN=Sluis Test Root, O=Sluis Test CA, C=NL");
        assert_eq!(
            view["subject_attributes"]["CN"],
            json!(["client.example.nl"])
        );
        assert_eq!(
            view["subject_attributes"]["organizationIdentifier"],
            json!(["NTRNL-12345678"])
        );
        assert_eq!(
            view["dns_names"],
            json!(["client.example.nl", "alt.example.nl"])
        );
        assert_eq!(view["uris"], json!(["spiffe://sluis.example/client"]));
        assert_eq!(view["emails"], json!(["beheer@example.nl"]));
        assert_eq!(
            view["other_names"],
            json!([{ "oid": "1.3.6.1.4.1.311.20.2.3", "value": "user@example.nl" }])
        );
        assert_eq!(view["serial"], "0102A3");
        assert_eq!(view["not_before"], JAN_2024);
        assert_eq!(view["not_after"], JAN_2034);
        assert_eq!(view.as_object().unwrap().len(), 11);
    }

    fn url_encoded_pem(cert: &rcgen::Certificate) -> String {
        utf8_percent_encode(&cert.pem(), NON_ALPHANUMERIC).to_string()
    }

    fn hex_sha256(der: &[u8]) -> String {
        hex::encode(Sha256::digest(der))
    }

    #[test]
    fn xfcc_in_envoys_documented_format() {
        let cert = client();
        let expected = ClientCertificate::from_der(cert.der()).unwrap();
        let by = "By=spiffe://sluis.example/gateway";
        let hash = format!("Hash={}", hex_sha256(cert.der()));
        let subject = r#"Subject="CN=client.example.nl,OU=Apotheek,O=Zorg\, Welzijn & Co,C=NL""#;
        let rest = "URI=spiffe://sluis.example/client;DNS=client.example.nl;DNS=alt.example.nl";

        // Cert quoted, as Envoy emits it, and unquoted, as other proxies may.
        for cert_pair in [
            format!("Cert=\"{}\"", url_encoded_pem(&cert)),
            format!("Cert={}", url_encoded_pem(&cert)),
        ] {
            let header = format!("{by};{hash};{cert_pair};{subject};{rest}");
            assert_eq!(from_xfcc(&header).unwrap().as_ref(), Some(&expected));
        }
        // Envoy's own key order, with the empty `URI=` it writes when there is no URI SAN.
        let header = format!(
            "{by};{hash};Subject=\"/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=test.lyft.com\";URI=;\
             Cert=\"{}\";DNS=client.example.nl",
            url_encoded_pem(&cert)
        );
        assert_eq!(from_xfcc(&header).unwrap().as_ref(), Some(&expected));
        // Keys are case-insensitive; spaces around separators are tolerated.
        let header = format!("by=x ; cert = {} ; uri=y", url_encoded_pem(&cert));
        assert_eq!(from_xfcc(&header).unwrap(), Some(expected));
    }

    #[test]
    fn xfcc_cert_smuggled_in_an_unquoted_uri_is_refused() {
        // Envoy writes URI SANs unquoted; one containing ";Cert=..." adds a second Cert.
        let real = url_encoded_pem(&client());
        let (other, _) = ca();
        let header = format!(
            "By=spiffe://gw;Hash=00;URI=https://x/a;Cert={};Cert=\"{real}\"",
            url_encoded_pem(&other)
        );
        assert_eq!(
            from_xfcc(&header).unwrap_err(),
            CertificateError::Xfcc("more than one Cert in an element")
        );
    }

    #[test]
    fn xfcc_uses_the_last_element_only() {
        let near = client();
        let (far, _) = ca();
        let near_parsed = ClientCertificate::from_der(near.der()).unwrap();
        let header = format!(
            "By=spiffe://a;Cert=\"{}\";Subject=\"CN=a,O=b\",By=spiffe://b;Cert={}",
            url_encoded_pem(&far),
            url_encoded_pem(&near)
        );
        assert_eq!(from_xfcc(&header).unwrap(), Some(near_parsed));

        // The last element has no certificate: no fallback to an earlier one.
        let header = format!(
            "By=spiffe://a;Cert={},By=spiffe://b;Hash=abcd;URI=spiffe://c",
            url_encoded_pem(&far)
        );
        assert_eq!(from_xfcc(&header).unwrap(), None);
    }

    #[test]
    fn xfcc_without_a_certificate() {
        // Envoy's documentation examples carry no Cert.
        let one = "By=http://frontend.lyft.com;\
            Hash=468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688;\
            Subject=\"/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client\";\
            URI=http://testclient.lyft.com";
        assert_eq!(from_xfcc(one).unwrap(), None);
        let two = "By=http://frontend.lyft.com;\
            Hash=468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688;\
            URI=http://testclient.lyft.com,By=http://backend.lyft.com;\
            Hash=9ba61d6425303443c0748a02dd8de688468ed33be74eee6556d90c0149c1309e;\
            URI=http://frontend.lyft.com";
        assert_eq!(from_xfcc(two).unwrap(), None);
        assert_eq!(from_xfcc("").unwrap(), None);
        assert_eq!(from_xfcc("  \t").unwrap(), None);
        assert_eq!(
            from_xfcc("Cert=\"\"").unwrap_err(),
            CertificateError::Pem("no CERTIFICATE block")
        );
    }

    #[test]
    fn xfcc_chain_gives_the_leaf() {
        let leaf = client();
        let (ca_cert, _) = ca();
        let chain = format!("{}{}", leaf.pem(), ca_cert.pem());
        let header = format!(
            "By=spiffe://gw;Chain=\"{}\"",
            utf8_percent_encode(&chain, NON_ALPHANUMERIC)
        );
        assert_eq!(
            from_xfcc(&header).unwrap(),
            Some(ClientCertificate::from_der(leaf.der()).unwrap())
        );
    }

    #[test]
    fn xfcc_bad_input() {
        let cert = url_encoded_pem(&client());
        let xfcc = |s: &str| from_xfcc(s).unwrap_err();
        assert_eq!(
            xfcc("Cert=\"abc"),
            CertificateError::Xfcc("unbalanced quotes")
        );
        assert_eq!(
            xfcc("Subject=\"a\\\""),
            CertificateError::Xfcc("unbalanced quotes")
        );
        assert_eq!(
            xfcc("Subject=\"a\\"),
            CertificateError::Xfcc("unbalanced quotes")
        );
        assert_eq!(
            xfcc("By=a;Hash"),
            CertificateError::Xfcc("a key has no '=' and value")
        );
        assert_eq!(
            xfcc("By=a;;Hash=b"),
            CertificateError::Xfcc("empty element or pair")
        );
        assert_eq!(
            xfcc("By=a,"),
            CertificateError::Xfcc("empty element or pair")
        );
        assert_eq!(xfcc("=a"), CertificateError::Xfcc("a value has no key"));
        assert_eq!(
            xfcc("B\"y=a"),
            CertificateError::Xfcc("a quote inside a key")
        );
        assert_eq!(
            xfcc("By=a\"b\""),
            CertificateError::Xfcc("a quote inside an unquoted value")
        );
        assert_eq!(
            xfcc("By=\"a\"b"),
            CertificateError::Xfcc("text after a quoted value")
        );
        assert_eq!(
            xfcc(&format!("Cert={cert};cert={cert}")),
            CertificateError::Xfcc("more than one Cert in an element")
        );
        assert_eq!(
            xfcc("Cert=hello"),
            CertificateError::Pem("no CERTIFICATE block")
        );
        assert_eq!(
            xfcc("Cert=-----BEGIN%20CERTIFICATE-----%0AAAAA%0A"),
            CertificateError::Pem("a block has no END line")
        );
        let huge = format!("By=a;Cert={}", "A".repeat(MAX_INPUT_LEN));
        assert!(matches!(xfcc(&huge), CertificateError::TooLarge { .. }));
        // A value of separators and quotes only: an error, never a panic.
        for s in [
            "\"",
            ",",
            ";",
            "=",
            "\\",
            "a=\"\\",
            "a=\"\",",
            ",,,;;;===\"\"\"",
        ] {
            assert!(from_xfcc(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn client_cert_header() {
        let cert = client();
        let expected = ClientCertificate::from_der(cert.der()).unwrap();
        let b64 = STANDARD.encode(cert.der());
        assert_eq!(
            from_client_cert_header(&format!(":{b64}:")).unwrap(),
            expected
        );
        assert_eq!(
            from_client_cert_header(&format!(" \t:{b64}: ")).unwrap(),
            expected
        );
        let unpadded = b64.trim_end_matches('=');
        assert_eq!(
            from_client_cert_header(&format!(":{unpadded}:")).unwrap(),
            expected
        );
        assert_eq!(
            from_client_cert_header(&format!(":{b64}:;a=1")).unwrap(),
            expected
        );
    }

    #[test]
    fn client_cert_header_bad_input() {
        let b64 = STANDARD.encode(client().der());
        let err = |s: &str| from_client_cert_header(s).unwrap_err();
        let header = |m: &'static str| CertificateError::ClientCertHeader(m);
        let not_sf = header("not a byte sequence: expected ':<base64 DER>:'");
        assert_eq!(err(&b64), not_sf);
        assert_eq!(err(""), not_sf);
        assert_eq!(
            err(&format!(":{b64}")),
            header("byte sequence has no closing ':'")
        );
        assert_eq!(err("::"), header("empty byte sequence"));
        assert_eq!(
            err(":not base64!:"),
            header("byte sequence is not valid base64")
        );
        assert_eq!(
            err(&format!(":{b64}:, :{b64}:")),
            header("more than one certificate (a list, not a single item)")
        );
        assert_eq!(
            err(&format!(":{b64}:x")),
            header("unexpected text after the byte sequence")
        );
        assert!(matches!(err(":aGVsbG8=:"), CertificateError::Parse(_)));
        let huge = format!(":{}:", "A".repeat(MAX_INPUT_LEN));
        assert!(matches!(err(&huge), CertificateError::TooLarge { .. }));
    }

    #[test]
    fn pem_bad_input() {
        let pem = client().pem();
        let err = |s: &str| ClientCertificate::from_pem(s).unwrap_err();
        assert_eq!(err(""), CertificateError::Pem("no CERTIFICATE block"));
        assert_eq!(
            err("garbage \u{0}\u{ff} text"),
            CertificateError::Pem("no CERTIFICATE block")
        );
        let key_only = KeyPair::generate().unwrap().serialize_pem();
        assert_eq!(
            err(&key_only),
            CertificateError::Pem("no CERTIFICATE block")
        );
        let no_end = pem.replace("-----END CERTIFICATE-----", "");
        assert_eq!(
            err(&no_end),
            CertificateError::Pem("a block has no END line")
        );
        let bad_begin = pem.replace("-----BEGIN CERTIFICATE-----", "-----BEGIN CERTIFICATE---");
        assert_eq!(
            err(&bad_begin),
            CertificateError::Pem("malformed BEGIN line")
        );
        let lines: Vec<&str> = pem.lines().collect();
        let bad_b64 = format!(
            "{}\n!!!!{}\n{}\n",
            lines[0],
            lines[1].get(4..).unwrap(),
            lines[1..].join("\n")
        );
        assert_eq!(
            err(&bad_b64),
            CertificateError::Pem("bad base64 in the CERTIFICATE block")
        );
        let not_a_cert =
            "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n";
        assert!(matches!(err(not_a_cert), CertificateError::Parse(_)));
        let huge = format!("{pem}{}", " ".repeat(MAX_INPUT_LEN));
        assert_eq!(
            err(&huge),
            CertificateError::TooLarge {
                what: "client certificate PEM",
                len: huge.len()
            }
        );
    }

    #[test]
    fn der_bad_input_never_panics() {
        let cert = client();
        let der = cert.der().as_ref();
        assert!(matches!(
            ClientCertificate::from_der(&[]),
            Err(CertificateError::Parse(_))
        ));
        // Every truncation is an error.
        for len in 0..der.len() {
            assert!(
                matches!(
                    ClientCertificate::from_der(&der[..len]),
                    Err(CertificateError::Parse(_))
                ),
                "truncated to {len}"
            );
        }
        // Trailing data is refused.
        let mut trailing = der.to_vec();
        trailing.push(0);
        assert_eq!(
            ClientCertificate::from_der(&trailing).unwrap_err(),
            CertificateError::Parse("1 bytes of trailing data after the certificate".to_owned())
        );
        // Corrupting any single byte gives a result or an error, never a panic.
        for i in 0..der.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut bad = der.to_vec();
                bad[i] ^= flip;
                let _ = ClientCertificate::from_der(&bad);
            }
        }
        let huge = vec![0x30; MAX_INPUT_LEN + 1];
        assert!(matches!(
            ClientCertificate::from_der(&huge),
            Err(CertificateError::TooLarge { .. })
        ));
    }

    #[test]
    fn duplicate_subject_alternative_names_are_refused() {
        let mut params = client_params();
        let san = tlv(0x30, &tlv(0x82, b"other.example.nl"));
        params.custom_extensions = vec![CustomExtension::from_oid_content(&[2, 5, 29, 17], san)];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let err = ClientCertificate::from_der(cert.der()).unwrap_err();
        assert!(
            matches!(&err, CertificateError::Parse(m) if m.starts_with("subject alternative names")),
            "{err}"
        );
    }

    #[test]
    fn error_messages_say_what_is_wrong() {
        assert_eq!(
            CertificateError::Pem("no CERTIFICATE block").to_string(),
            "client certificate is not valid PEM: no CERTIFICATE block"
        );
        assert_eq!(
            CertificateError::Parse("truncated DER".into()).to_string(),
            "client certificate does not parse: truncated DER"
        );
        assert_eq!(
            CertificateError::TooLarge {
                what: "client-cert header",
                len: 70000
            }
            .to_string(),
            "client-cert header is too large: 70000 bytes, at most 65536 accepted"
        );
        assert_eq!(
            CertificateError::Xfcc("unbalanced quotes").to_string(),
            "x-forwarded-client-cert header is malformed: unbalanced quotes"
        );
    }
}
