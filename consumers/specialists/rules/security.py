# ruff: noqa: RUF001
# (The multiplication sign and other typographic signs are intended: this module is answer prose.)
"""The security specialist's offline rules: threat models, identity, secrets, crypto, compliance."""

from __future__ import annotations

import re

from consumers.specialists.rules.figures import Figures, fmt_rate
from consumers.specialists.rules.rule import Derived, Rule, SpecialistRules

GCM_RANDOM_NONCE_LIMIT = 2**32  # NIST SP 800-38D bound for random 96-bit nonces under one key

_FRAMEWORKS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"\bpci(?:[\s-]*dss)?\b", re.IGNORECASE),
        "PCI DSS v4.0.1: shrink scope first (hosted fields or tokenisation can bring you to SAQ "
        "A); "
        "then req. 3 (no stored sensitive authentication data, PAN rendered unreadable), 4 (strong "
        "crypto in transit), 6.4.3 and 11.6.1 (payment-page script inventory and tamper "
        "detection), "
        "8.4.2 (MFA for all access into the CDE), 10 (logs kept 12 months, 3 immediately "
        "available).",
    ),
    (
        re.compile(r"\bsoc\s*[-]?\s*2\b", re.IGNORECASE),
        "SOC 2: pick the Trust Services Criteria in scope (Security is mandatory); Type I tests "
        "design at a point in time, Type II operating effectiveness over 3-12 months, so start "
        "collecting evidence (access reviews, change approvals, incident records) now.",
    ),
    (
        re.compile(r"\bgdpr\b", re.IGNORECASE),
        "GDPR: lawful basis and records of processing (Art. 30), data protection by design "
        "(Art. 25), security of processing (Art. 32), breach notification within 72 h (Art. 33), "
        "erasure (Art. 17), DPIA for high-risk processing (Art. 35), processors under DPAs.",
    ),
    (
        re.compile(r"\bhipaa\b|\bphi\b", re.IGNORECASE),
        "HIPAA: BAAs with every vendor touching PHI; §164.312 technical safeguards (access "
        "control, "
        "audit controls, integrity, authentication, transmission security); breach notice ≤ 60 "
        "days.",
    ),
    (
        re.compile(r"\biso\s*27001\b", re.IGNORECASE),
        "ISO 27001: an ISMS with a risk assessment, a Statement of Applicability over the Annex A "
        "controls, internal audit and management review before certification.",
    ),
)


def compliance_math(figures: Figures) -> Derived:
    named = tuple(text for pattern, text in _FRAMEWORKS if pattern.search(figures.text))
    return Derived(design=named)


def crypto_math(figures: Figures) -> Derived:
    rate = figures.rps or figures.event_rate
    if rate is None:
        return Derived()
    per_second = rate.value
    days = GCM_RANDOM_NONCE_LIMIT / per_second / 86_400
    return Derived(
        numbers=(
            f"At {fmt_rate(per_second)} encryptions/s, one AES-GCM key with random nonces reaches "
            f"the 2^32-message limit in ~{days:,.0f} days: rotate data keys well before (envelope "
            "encryption makes that cheap).",
        )
    )


RULES = SpecialistRules(
    specialist="security",
    label="Security",
    rules=(
        Rule(
            id="security.threat-model",
            title="Threat modelling with STRIDE",
            triggers=(
                (r"threat[\s-]*model\w*", 3),
                (r"\bstride\b|\bdread\b|\bpasta\b|attack\s+trees?", 3),
                (r"attack\s+surface|trust\s+boundar\w*|data[\s-]flow\s+diagrams?", 3),
                (r"\bthreats?\b|\brisks?\s+assessment", 2),
            ),
            recommendation=(
                "Draw the data-flow diagram with explicit trust boundaries, walk STRIDE per "
                "element (processes, data stores, data flows, external entities), and turn each "
                "credible threat into a mitigation with an owner and a test; record residual "
                "risk and who accepted it."
            ),
            design=(
                "Scope: one feature or service per session; the DFD shows actors, services, "
                "stores, third parties, and every boundary crossing (internet → edge, service → "
                "database, tenant → tenant).",
                "STRIDE per element: Spoofing (authn), Tampering (integrity, signing), "
                "Repudiation (audit logs), Information disclosure (encryption, authz), Denial of "
                "service (limits, quotas), Elevation of privilege (authz, sandboxing).",
                "Rate each threat by likelihood × impact; prioritise threats crossing the "
                "internet boundary and touching credentials, money or personal data.",
                "Every mitigation becomes a ticket with a verification (test, config check, "
                "pentest item).",
                "Revisit on architecture changes; keep the model in the repo next to the code.",
            ),
            numbers=(
                "A session of 60-90 minutes per feature with engineering, product and security.",
                "100% of high-rated threats with a mitigation or a signed risk acceptance.",
            ),
            anti_patterns=(
                "Threat models written once for an audit and never updated.",
                "Listing generic threats without tying them to the system's data flows.",
                "Mitigations with no owner or test.",
            ),
            checklist=(
                "DFD with trust boundaries checked into the repo.",
                "STRIDE table per element with ratings.",
                "Mitigation tickets linked, each with a verification.",
                "Residual risks accepted by a named owner.",
            ),
        ),
        Rule(
            id="security.oauth-oidc",
            title="OAuth 2.0 and OpenID Connect",
            triggers=(
                (r"\boauth\s*2?(?:\.\d)?\b", 3),
                (r"\boidc\b|openid(?:\s+connect)?", 3),
                (
                    r"\bpkce\b|authori[sz]ation\s+code|client\s+credentials|refresh\s+tokens?|"
                    r"\bdpop\b",
                    3,
                ),
                (
                    r"\bsso\b|\bsaml\b|\bidp\b|identity\s+provider|\bkeycloak\b|\bauth0\b|\bokta\b",
                    2,
                ),
                (r"\blog\s*in\b|\blogin\b|\bsign[\s-]?in\b", 1),
            ),
            recommendation=(
                "Follow the OAuth 2.0 Security BCP (RFC 9700): authorization code with PKCE for "
                "every client, no implicit or password grants, exact redirect-URI matching, "
                "short-lived access tokens with rotating refresh tokens, and sender-constrained "
                "tokens (DPoP or mTLS) where token theft is a real risk; use OIDC only for "
                "authentication, with full ID-token validation."
            ),
            design=(
                "Browser apps: a backend-for-frontend keeps tokens server-side and gives the "
                "browser an HttpOnly session cookie; SPAs holding tokens are the exception.",
                "Mobile/native: authorization code + PKCE (S256) via the system browser (RFC "
                "8252).",
                "Service-to-service: client credentials with narrowly scoped tokens, or token "
                "exchange (RFC 8693) to carry the user's identity downstream.",
                "ID token: validate iss, aud, exp, iat, nonce, signature (JWKS), azp when multiple "
                "audiences; never use ID tokens as API access tokens.",
                "Refresh tokens: rotation with reuse detection (a reused token revokes the "
                "family).",
                "Scopes model capabilities; fine-grained authorisation stays in the service.",
            ),
            numbers=(
                "Access tokens 5-15 min; refresh tokens rotated on every use, absolute lifetime "
                "(e.g. 30 days) with idle timeout.",
                "Authorization codes single-use, valid ≤ 60 s; clock skew ≤ 60 s.",
            ),
            anti_patterns=(
                "Implicit flow or resource-owner password grant.",
                "Wildcard or prefix-matched redirect URIs.",
                "Long-lived tokens in localStorage.",
                "Using ID tokens to call APIs.",
            ),
            checklist=(
                "PKCE enforced for all clients, including confidential ones.",
                "Redirect URIs exact-match registered.",
                "Refresh token rotation and reuse detection tested.",
                "Negative token-validation tests (aud, iss, exp, alg, kid).",
            ),
        ),
        Rule(
            id="security.tokens-sessions",
            title="JWTs, sessions and CSRF",
            triggers=(
                (r"\bjwts?\b|json\s+web\s+tokens?|\bjwks\b", 3),
                (r"\bsessions?\b|\bcookies?\b", 2),
                (r"\bcsrf\b|\bxsrf\b|same[\s-]?site", 3),
                (r"token\s+(?:validation|revocation|storage|theft)", 2),
            ),
            recommendation=(
                "Validate JWTs per RFC 8725 (pinned algorithms, iss/aud/exp checks, keys from a "
                "cached JWKS), keep them short-lived, and for browsers prefer server-side sessions "
                "in HttpOnly, Secure, SameSite cookies plus CSRF protection on state-changing "
                "requests."
            ),
            design=(
                "Cookies: `__Host-` prefix, HttpOnly, Secure, SameSite=Lax (Strict for admin), "
                "Path=/; session ids ≥ 128 bits of entropy, rotated on login and privilege change.",
                "CSRF: synchronizer or double-submit tokens for cookie-authenticated unsafe "
                "methods; check Origin/Sec-Fetch-Site as defence in depth.",
                "JWT: allowlist ES256/RS256/EdDSA; reject `none` and algorithm confusion; require "
                "`typ` where profiles define it (RFC 9068 `at+jwt`).",
                "Revocation: short lifetimes, server-side session store for immediate logout, "
                "jti deny-list for high-risk actions.",
            ),
            numbers=(
                "Idle session timeout 15-30 min for sensitive apps; absolute 8-24 h.",
                "JWKS cache 5-15 min; refresh on unknown kid, rate-limited.",
            ),
            anti_patterns=(
                "JWTs as long-lived sessions that cannot be revoked.",
                "Tokens in localStorage exposed to any XSS.",
                "Accepting the algorithm from the token header.",
            ),
            checklist=(
                "Cookie attributes verified in an automated test.",
                "CSRF protection on every state-changing endpoint.",
                "Logout invalidates server-side state.",
            ),
        ),
        Rule(
            id="security.secrets",
            title="Secrets management",
            triggers=(
                (r"\bsecrets?\b", 3),
                (
                    r"\bvault\b|secrets?\s+manager|\bsops\b|sealed[\s-]secrets|"
                    r"external[\s-]secrets",
                    3,
                ),
                (r"api\s+keys?|credentials?|passwords?|\.env\b|hard[\s-]?coded", 2),
                (r"\bgitleaks\b|\btrufflehog\b|secret\s+scanning", 3),
            ),
            recommendation=(
                "Keep secrets in a secrets manager (Vault or the cloud's), delivered to workloads "
                "at runtime through workload identity, prefer short-lived dynamic credentials "
                "over static ones, rotate what remains automatically, and scan code and images "
                "so nothing leaks into git."
            ),
            design=(
                "Workload identity (Kubernetes service account → cloud IAM / Vault auth) instead "
                "of bootstrap secrets.",
                "Dynamic database credentials (Vault database engine) with TTLs of hours; "
                "static secrets versioned and rotated by automation with dual-valid overlap.",
                "Kubernetes: External Secrets Operator or CSI driver; etcd encryption at rest; "
                "RBAC so only the workload's service account can read its secret.",
                "Pre-commit and CI secret scanning (gitleaks), push protection; a leaked secret "
                "is revoked first, then removed from history.",
                "Application: never log secrets; redact in error reports; load once, keep in "
                "memory.",
            ),
            numbers=(
                "Static secrets rotated ≤ 90 days (or on staff changes/incidents); dynamic ones "
                "expire in hours.",
                "Time to revoke a leaked credential: < 1 h, rehearsed.",
            ),
            anti_patterns=(
                "Secrets in source, images, CI logs or env files in git.",
                "One shared credential for many services.",
                "Rotation that requires downtime, so it never happens.",
            ),
            checklist=(
                "Secret scanning in pre-commit and CI.",
                "Inventory of secrets with owner and rotation date.",
                "Rotation tested without downtime.",
                "Leaked-secret runbook rehearsed.",
            ),
        ),
        Rule(
            id="security.encryption",
            title="Encryption and key rotation",
            triggers=(
                (r"\bencrypt\w*|\bdecrypt\w*", 3),
                (r"key\s+rotation|rotat\w*\s+(?:the\s+)?(?:encryption\s+)?keys?", 3),
                (
                    r"\bkms\b|\bhsm\b|envelope\s+encryption|\baes\b|\btls\b|\bmtls\b|"
                    r"\bcertificates?\b",
                    2,
                ),
                (r"at\s+rest|in\s+transit|\bcrypto\w*", 2),
            ),
            recommendation=(
                "Encrypt in transit with TLS 1.3 (1.2 minimum) and mTLS between services, at rest "
                "with AES-256-GCM under envelope encryption (data keys wrapped by a KMS/HSM key "
                "that never leaves it), and rotate keys on a schedule by re-wrapping data keys "
                "rather than re-encrypting bulk data."
            ),
            design=(
                "Envelope encryption: per-object or per-tenant data keys (DEKs) encrypt data; a "
                "KMS key (KEK) wraps DEKs; store the wrapped DEK and key version with the data.",
                "Rotation: new KEK versions for new wraps; re-wrap DEKs in the background; keep "
                "old versions for decryption until nothing references them.",
                "AEAD only (AES-GCM, ChaCha20-Poly1305) via a vetted library (Tink, libsodium, "
                "the platform's KMS SDK); unique nonces; associated data binds ciphertext to its "
                "record id.",
                "TLS: automated certificates (cert-manager, ACME), HSTS, modern cipher suites; "
                "mTLS via the mesh or SPIFFE identities.",
                "Field-level encryption or tokenisation for the most sensitive fields (PAN, "
                "national ids) so database admins never see them.",
            ),
            numbers=(
                "Cryptoperiods per NIST SP 800-57: data-encryption keys ≤ 1-2 years of use; "
                "automatic annual KMS rotation as a floor.",
                "AES-GCM with random 96-bit nonces: ≤ 2^32 messages per key.",
                "HSTS max-age ≥ 31,536,000 s (1 year).",
            ),
            anti_patterns=(
                "Rolling your own crypto or using ECB/CBC without authentication.",
                "Keys stored next to the data they protect.",
                "Rotation that requires re-encrypting petabytes, so it is never done.",
            ),
            checklist=(
                "Key inventory with owners, algorithms and rotation dates.",
                "Rotation exercised in staging including decryption of old data.",
                "TLS configuration scanned (no TLS < 1.2, no weak suites).",
            ),
            calculate=crypto_math,
        ),
        Rule(
            id="security.appsec",
            title="Application security (OWASP)",
            triggers=(
                (r"\bowasp\b|\basvs\b", 3),
                (
                    r"\bxss\b|cross[\s-]site\s+scripting|sql\s+injection|\bsqli\b|\bssrf\b|"
                    r"\binjection\b|\brce\b",
                    3,
                ),
                (r"\bvulnerab\w*|\bexploit\w*|\bpen[\s-]?test\w*|penetration\s+test\w*", 2),
                (
                    r"input\s+validation|sanitiz\w*|\bcsp\b|content[\s-]security[\s-]policy|"
                    r"file\s+uploads?",
                    2,
                ),
                (r"\bsast\b|\bdast\b|\bsecure\s+cod\w*", 2),
            ),
            recommendation=(
                "Use OWASP ASVS as the verification standard (Level 2 for most business apps), "
                "fix vulnerability classes rather than instances (parameterised queries, "
                "contextual output encoding with a strict CSP, SSRF egress controls, safe "
                "deserialisation), and put SAST, DAST and dependency scanning in CI."
            ),
            design=(
                "Injection: parameterised queries/ORM bindings only; no string-built SQL, shell "
                "or LDAP; allowlist input validation at the boundary.",
                "XSS: framework auto-escaping, contextual encoding, CSP with nonces "
                "(`script-src 'nonce-…' 'strict-dynamic'; object-src 'none'; base-uri 'none'`), "
                "Trusted Types where supported.",
                "SSRF: egress allowlists, block link-local and metadata addresses "
                "(169.254.169.254), IMDSv2, resolve-and-pin DNS before connecting.",
                "Uploads: size limits, content-type sniffing, storage outside the web root, "
                "malware scanning, re-encoding images, signed download URLs.",
                "Security headers: HSTS, X-Content-Type-Options: nosniff, frame-ancestors in CSP, "
                "Referrer-Policy.",
                "Fix a found bug with a regression test that would have caught it.",
            ),
            numbers=(
                "Critical findings fixed in ≤ 7-15 days, high ≤ 30 days; known-exploited "
                "vulnerabilities first.",
                "ASVS L1 for everything, L2 for apps with sensitive data, L3 for high-value "
                "targets.",
            ),
            anti_patterns=(
                "Blocklist input filtering as the main defence.",
                "A WAF instead of fixing the code.",
                "CSP with 'unsafe-inline' for scripts.",
            ),
            checklist=(
                "SAST and dependency scanning on every PR; DAST on staging.",
                "ASVS level chosen and the relevant chapters tracked.",
                "Security headers verified by an automated check.",
            ),
        ),
        Rule(
            id="security.compliance",
            title="Compliance: SOC 2, PCI DSS, GDPR",
            triggers=(
                (r"\bcomplian\w*|\bcertif\w*|\baudits?\b", 3),
                (
                    r"\bsoc\s*[-]?\s*2\b|\bpci(?:[\s-]*dss)?\b|\bgdpr\b|\bhipaa\b|\biso\s*27001\b|"
                    r"\bccpa\b",
                    3,
                ),
                (r"\bregulat\w*|\bauditors?\b|\bevidence\b|\bcontrols?\b", 1),
                (r"card\s*holder|\bpan\b|card\s+data|personal\s+data", 2),
            ),
            recommendation=(
                "Reduce scope first (tokenise card data, minimise personal data), map controls "
                "once to every framework you need, implement them as code and automation, and "
                "collect evidence continuously so the audit is a report, not a project."
            ),
            design=(
                "Control matrix: one control, many framework mappings (SOC 2 CC-series, PCI DSS "
                "requirements, GDPR articles); owner and evidence source per control.",
                "Evidence automation: access reviews, change approvals (PRs), vulnerability SLAs, "
                "backups and restore tests, incident records pulled from the systems of record.",
                "Policies that match practice; training and vendor reviews on a calendar.",
            ),
            numbers=(
                "Access reviews quarterly for privileged access; offboarding within 24 h.",
                "Audit logs retained ≥ 12 months where PCI DSS applies.",
            ),
            anti_patterns=(
                "Compliance as a yearly scramble for screenshots.",
                "Bringing every system into scope instead of isolating the sensitive one.",
                "Policies nobody follows.",
            ),
            checklist=(
                "Scope diagram and data inventory.",
                "Control matrix with owners and automated evidence.",
                "Gap assessment before engaging the auditor.",
            ),
            calculate=compliance_math,
        ),
        Rule(
            id="security.supply-chain",
            title="Vulnerabilities and supply chain",
            triggers=(
                (r"\bcves?\b|cve-\d{4}-\d+|\bcvss\b|\bkev\b", 3),
                (
                    r"\bdependenc\w*|\bsbom\b|\bsca\b|\bsnyk\b|\bdependabot\b|\brenovate\b|"
                    r"\btrivy\b|\bgrype\b",
                    2,
                ),
                (
                    r"supply[\s-]chain|\bslsa\b|\bsigstore\b|\bcosign\b|signed\s+(?:images|"
                    r"artifacts)",
                    3,
                ),
                (r"\blog4j\b|\blog4shell\b|\bpatch\w*", 2),
                (r"container\s+(?:scan\w*|images?)", 1),
            ),
            recommendation=(
                "Know what you run (SBOMs per build), scan continuously, prioritise by "
                "exploitability (CISA KEV, EPSS, reachability) rather than CVSS alone, patch "
                "within severity SLAs through automated dependency updates, and sign and verify "
                "what you deploy."
            ),
            design=(
                "SBOM (CycloneDX or SPDX) generated in CI for every artefact and stored with it.",
                "Scanning: SCA on PRs, image scanning (Trivy/Grype) in CI and on running images "
                "for newly published CVEs.",
                "Triage: known-exploited (KEV) and reachable first; document not-affected "
                "decisions as VEX.",
                "Automated updates (Renovate/Dependabot) with tests; pinned versions and "
                "lockfiles.",
                "Provenance: SLSA build provenance, cosign signatures, admission policy that "
                "rejects unsigned images.",
            ),
            numbers=(
                "Critical ≤ 7-15 days, high ≤ 30 days, medium ≤ 90 days; KEV entries immediately.",
            ),
            anti_patterns=(
                "Sorting thousands of findings by CVSS and fixing none.",
                "Unpinned dependencies and mutable image tags in production.",
            ),
            checklist=(
                'SBOM per release stored and queryable ("are we affected by CVE-X?" in minutes).',
                "Patch SLAs tracked on a dashboard.",
                "Admission control verifies signatures.",
            ),
        ),
        Rule(
            id="security.authz",
            title="Authorisation and tenant isolation",
            triggers=(
                (r"\bauthori[sz]\w*|\bpermissions?\b|access\s+control", 3),
                (r"\brbac\b|\babac\b|\brebac\b|\bopa\b|\bcedar\b|\bopenfga\b|\bzanzibar\b", 3),
                (r"multi[\s-]?tenan\w*|tenant\s+isolation|\bidor\b|\bbola\b", 3),
                (r"least\s+privilege|\broles?\b|\badmin\b", 1),
            ),
            recommendation=(
                "Deny by default and check authorisation on every request at the object level: "
                "RBAC for coarse roles, attribute or relationship-based policies (OPA, Cedar, "
                "OpenFGA) for fine-grained and multi-tenant rules, with the tenant id enforced in "
                "the data layer so a missed check cannot leak another tenant's data."
            ),
            design=(
                "Policy decision in one library or service; enforcement at every entry point "
                "(HTTP, gRPC, consumers, batch jobs).",
                "Object-level checks: load the resource, then authorise the caller against it "
                "(BOLA/IDOR is the top API risk).",
                "Tenant isolation: tenant_id on every row and query; PostgreSQL row-level "
                "security as a backstop; per-tenant keys for sensitive data.",
                "Admin actions: separate roles, MFA, just-in-time elevation, audit trail.",
            ),
            numbers=("Privileged access reviewed quarterly; standing admin access minimised.",),
            anti_patterns=(
                "Authorisation only in the UI.",
                "Trusting ids from the client without an ownership check.",
            ),
            checklist=(
                "Cross-tenant access tests for every endpoint.",
                "Policies versioned and tested like code.",
            ),
        ),
        Rule(
            id="security.detection",
            title="Security logging and incident response",
            triggers=(
                (r"audit\s+logs?|security\s+logs?|\bsiem\b", 3),
                (r"\bincidents?\b|\bbreach\w*|\bforensic\w*", 3),
                (r"\bdetect\w*|\balert\w*|\bmonitor\w*", 1),
            ),
            recommendation=(
                "Log security-relevant events (authentication, authorisation failures, admin "
                "actions, key and secret access) in a tamper-evident store, alert on the few "
                "signals that matter, and rehearse an incident runbook with legal and "
                "notification deadlines built in."
            ),
            design=(
                "Structured events with actor, action, resource, result, source IP, request id; "
                "no secrets, tokens or card numbers.",
                "Ship to a SIEM with write-once retention; restrict who can delete logs.",
                "Detections: impossible travel, brute force, privilege escalation, unusual data "
                "export, disabled logging.",
                "Runbook: triage, contain, eradicate, recover, notify, post-mortem; contacts "
                "and decision owners named.",
            ),
            numbers=(
                "GDPR breach notification to the authority within 72 h of awareness.",
                "Security logs retained ≥ 12 months.",
            ),
            anti_patterns=(
                "Logging tokens, passwords or full card numbers.",
                "Alerts nobody owns.",
            ),
            checklist=(
                "Audit events defined and tested.",
                "Incident tabletop exercise at least yearly.",
            ),
        ),
    ),
    general=Rule(
        id="security.general",
        title="Security review checklist",
        triggers=(),
        recommendation=(
            "No specific security topic was recognised, so this is the baseline review the "
            "security specialist runs. Describe the system, its data and its users for a "
            "specific threat model."
        ),
        design=(
            "Threat model the data flows (STRIDE) and mark trust boundaries.",
            "Authentication via OAuth 2.0/OIDC with PKCE; object-level authorisation everywhere.",
            "Secrets in a manager, rotated; no secrets in code or images.",
            "TLS 1.3 in transit, AES-256-GCM envelope encryption at rest.",
            "OWASP ASVS L2 as the verification target; SAST, DAST, SCA in CI.",
            "Security logging, detection and an incident runbook.",
        ),
        numbers=(
            "Access tokens 5-15 min; secrets rotated ≤ 90 days.",
            "Critical vulnerabilities fixed ≤ 7-15 days, high ≤ 30 days.",
        ),
        anti_patterns=(
            "Security by obscurity.",
            "Long-lived credentials and shared accounts.",
            "Authorisation only in the client.",
        ),
        checklist=(
            "Threat model exists and is current.",
            "Secret scanning and dependency scanning in CI.",
            "Access reviews scheduled.",
            "Incident runbook rehearsed.",
        ),
    ),
)
