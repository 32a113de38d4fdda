/**
 * The decision pipeline: one DecisionInput to one Decision, in a fixed order: locate the bearer
 * token → the verified-token cache, or verify it → the principal → the FHIR request → grants and
 * access, with group membership only when direct grants fall short. The checks live in
 * src/identity (who), src/fhir (what) and src/policy (whether); this module orders them, holds the
 * per-decision budget, turns an exception into an indeterminate decision (errors.ts) and emits the
 * decision event (event.ts). The composition root (src/app.ts) builds one Pdp.
 */
import type { PdpConfig } from '../config/schema.js';
import { newDecisionId } from '../core/decision-id.js';
import { DirectoryUnavailableError, type GroupMembershipResolver } from '../directory/types.js';
import { BudgetExceeded, EdgeFailure, indeterminateFor, lookupFailed, type WaitedEdge } from './errors.js';
import { CompartmentLookupError, type CompartmentAnswer, type CompartmentLookup } from '../lookup/types.js';
import { eventFor, pathOnly } from './event.js';
import { publicDiscovery } from '../fhir/public.js';
import { readBundle } from '../fhir/bundle.js';
import { FhirBasePath, parseFhirRequest, ROOT_BASE_PATH } from '../fhir/request.js';
import type { FhirRequest } from '../fhir/types.js';
import { checkB64Token, locateBearerToken } from '../identity/extract.js';
import { IssuerRegistry, type IssuerHealth, type IssuerRegistryOptions } from '../identity/issuers.js';
import { VerifiedTokenCache } from '../identity/token-cache.js';
import type { Principal } from '../core/principal.js';
import { principalFromToken } from '../identity/principal.js';
import { verifyAccessToken, type VerifiedToken } from '../identity/verify.js';
import { Counters } from '../core/metrics.js';
import {
  compilePolicy,
  decideAccess,
  directGrants,
  groupCandidateCount,
  groupCandidates,
  needsMembership,
  withGroupGrants,
  type Allowed,
  type CompiledPolicy,
  type LookupNeeded,
  type Grants,
  type MembershipReport,
} from '../policy/decide.js';
import { ALL_BUT_SMART, type ActionRequirement, type DataAction } from '../core/data-actions.js';
import { REASONS, refuse, type ReasonCode, type Refusal } from '../core/reasons.js';
import { Trace } from '../core/trace.js';
import type { Decision, DecideOptions, DecisionInput, DecisionLogger, PrincipalSummary } from './types.js';
import { DenyList, type RevocationEntry } from '../state/deny-list.js';
import { GroupIndex } from '../state/group-index.js';
import type { GroupRecord } from '../state/types.js';

export interface PdpDependencies {
  readonly clock?: () => number;
  readonly fetch?: typeof fetch;
  readonly logger?: DecisionLogger;
  readonly membership?: GroupMembershipResolver;
  /** The FHIR server asked about reads by id the URL cannot place (config.compartmentLookup). */
  readonly compartmentLookup?: CompartmentLookup;
  readonly counters?: Counters;
  /** Told of every discovery/JWKS fetch and unknown-kid refetch (src/telemetry). */
  readonly onKeyFetch?: IssuerRegistryOptions['onFetch'];
  readonly onUnknownKid?: IssuerRegistryOptions['onUnknownKid'];
}

export class Pdp {
  readonly registry: IssuerRegistry;
  readonly policy: CompiledPolicy;
  readonly counters: Counters;
  private readonly clock: () => number;
  private readonly basePath: FhirBasePath;
  private groupIndex = GroupIndex.empty();
  private readonly tokenCache?: VerifiedTokenCache;
  /**
   * The identity of each cached verified token, keyed by the cache's own entry object (entries go
   * when the cache drops the token). A miss's identity is used once and not kept.
   */
  private readonly identities = new WeakMap<VerifiedToken, Identity>();
  private denyList = DenyList.EMPTY;
  /**
   * Whether any token can be refused after verification: a non-empty deny-list or
   * maxTokenAgeSeconds. One field read on the cached path when neither is configured.
   */
  private revocationActive: boolean;
  /** smartNarrowing.gateways: the gateways a narrowed search is offered to. */
  private readonly narrowingGateways: ReadonlySet<string>;

  constructor(
    readonly config: PdpConfig,
    private readonly deps: PdpDependencies = {},
  ) {
    this.clock = deps.clock ?? Date.now;
    this.counters = deps.counters ?? new Counters();
    this.policy = compilePolicy(config);
    this.revocationActive = config.maxTokenAgeSeconds !== undefined;
    this.narrowingGateways = new Set(config.smartNarrowing.gateways);
    this.basePath = config.fhirBaseUrl ? new FhirBasePath(new URL(config.fhirBaseUrl).pathname) : ROOT_BASE_PATH;
    if (config.tokenCacheMaxEntries > 0 && config.tokenCacheMaxBytes > 0)
      this.tokenCache = new VerifiedTokenCache({
        maxEntries: config.tokenCacheMaxEntries,
        maxBytes: config.tokenCacheMaxBytes,
        clockSkewSeconds: config.clockSkewSeconds,
      });
    this.registry = new IssuerRegistry({
      authorities: [config.authority, ...config.smartIdentityProviders.map((p) => p.authority)],
      ...issuerTimingsOf(config),
      clock: this.clock,
      ...(deps.fetch ? { fetch: deps.fetch } : {}),
      onFetch: (kind, outcome, authority, durationMs) => {
        this.counters.inc(`${kind === 'jwks' ? 'jwks' : 'discovery'}_fetch_${outcome === 'ok' ? 'ok' : 'failed'}`);
        deps.onKeyFetch?.(kind, outcome, authority, durationMs);
      },
      ...(deps.onUnknownKid ? { onUnknownKid: deps.onUnknownKid } : {}),
      // A key the issuer stopped publishing stops validating at once, cached tokens included.
      onKeysRemoved: (issuer, kids) => void this.tokenCache?.evictKeys(issuer, kids),
    });
  }

  /** Replaces the group index (from a refresh or a snapshot). */
  setGroups(groups: Readonly<Record<string, GroupRecord>>): void {
    this.groupIndex = new GroupIndex(groups);
  }

  /** Replaces the deny-list (from a snapshot); cached tokens are checked against it on their next decision. */
  setRevocations(entries: readonly RevocationEntry[]): void {
    this.denyList = entries.length > 0 ? new DenyList(entries) : DenyList.EMPTY;
    this.revocationActive = this.denyList.size > 0 || this.config.maxTokenAgeSeconds !== undefined;
  }

  get revocations(): DenyList {
    return this.denyList;
  }

  get groups(): GroupIndex {
    return this.groupIndex;
  }

  /** The decision for `input`, as a promise. */
  decide(input: DecisionInput, options: DecideOptions = {}): Promise<Decision> {
    // Not an async function returning decideNow's promise: that costs two more microtask turns.
    try {
      return Promise.resolve(this.decideNow(input, options));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * The decision for `input`: a value when nothing had to be waited for (a cached token, direct
   * grants), else a promise, so the HTTP path (src/http/decide-api.ts) answers a decision made
   * from memory without a promise or microtask turn. A failure of the decision is an
   * indeterminate decision; only a throwing logger or subjectMismatch throws (here, synchronously).
   */
  decideNow(input: DecisionInput, options: DecideOptions = {}): Decision | Promise<Decision> {
    const started = performance.now();
    const decisionId = newDecisionId();
    const trace = options.trace ? new Trace() : undefined;
    const budget = new Budget(started, this.config.decisionBudgetMs);
    let inner: Outcome | Promise<Outcome>;
    try {
      inner = this.decideInner(input, trace, budget);
    } catch (err) {
      inner = this.failed(err, budget);
    }
    if (inner instanceof Promise)
      return inner.then(
        (outcome) => this.conclude(outcome, input, options, decisionId, started, trace),
        (err: unknown) => this.conclude(this.failed(err, budget), input, options, decisionId, started, trace),
      );
    return this.conclude(inner, input, options, decisionId, started, trace);
  }

  /** A decision that threw: indeterminate, naming who was waiting when that was known (the 503's answer and log line). */
  private failed(err: unknown, budget: Budget): Outcome {
    return { refusal: indeterminateFor(err, this.config.decisionBudgetMs), identity: budget.identity, cacheHit: budget.cacheHit };
  }

  /** The Decision of an outcome, counted and logged. */
  private conclude(outcome: Outcome, input: DecisionInput, options: DecideOptions, decisionId: string, started: number, trace: Trace | undefined): Decision {
    const mismatch = outcome.identity && options.subjectMismatch?.(outcome.identity.summary);
    if (mismatch) {
      const r = refuse('principal_not_allowed', mismatch);
      trace?.fail('principal', r);
      outcome = { refusal: r, identity: outcome.identity, ...(outcome.token ? { token: outcome.token } : {}), cacheHit: outcome.cacheHit ?? false };
    }
    const reason: ReasonCode = 'refusal' in outcome ? outcome.refusal.reason : 'allowed';
    const def = REASONS[reason];
    // Built by assignment, not conditional spreads: spreads take V8's slow object-clone path, and
    // this runs once per decision.
    const decision: Mutable<Decision> = {
      decisionId,
      decision: def.decision,
      status: def.status,
      reason,
      message: def.message,
      durationMs: 0,
      cacheHit: outcome.cacheHit ?? false,
    };
    if ('refusal' in outcome) {
      decision.hint = outcome.refusal.hint;
      if (outcome.refusal.message !== undefined) decision.message = outcome.refusal.message;
    }
    if (outcome.identity) decision.principal = outcome.identity.summary;
    if ('allowed' in outcome) {
      decision.dataActions = outcome.allowed.dataActions;
      if (outcome.allowed.compartment) decision.compartment = outcome.allowed.compartment;
      if (outcome.allowed.queryAppend) decision.queryAppend = outcome.allowed.queryAppend;
    }
    if (trace) {
      decision.trace = trace.complete();
      if (outcome.token) decision.token = { header: outcome.token.jws.header, claims: outcome.token.claims };
    }
    decision.durationMs = Math.round((performance.now() - started) * 1000) / 1000;
    this.counters.inc(def.decision === 'allow' ? 'allowed' : def.decision === 'deny' ? 'denied' : 'indeterminate');
    this.deps.logger?.(eventFor(decision, input), decision);
    return decision;
  }

  /** The outcome of a decision: a value when nothing had to be waited for, else a promise. */
  private decideInner(input: DecisionInput, trace: Trace | undefined, budget: Budget): Outcome | Promise<Outcome> {
    // Fail closed before anything else: a question that does not say what the original request
    // was is malformed, and one whose original request is ambiguous is never decided for either reading.
    if (input.incomplete) {
      const r = refuse('invalid_request', input.incomplete);
      trace?.fail('dataAction', r);
      return { refusal: r };
    }
    if (input.ambiguity) {
      const r = refuse('action_not_permitted', `the original request is ambiguous: ${input.ambiguity}`);
      trace?.fail('dataAction', r);
      return { refusal: r };
    }
    // SMART discovery is how a client learns where to get a token, so it cannot need one. Its
    // credentials are not read: the answer is the same for everyone, and carries no identity.
    const discovery = publicDiscovery(input.method, input.target, this.basePath);
    if (discovery) {
      trace?.skip('token', 'not needed: SMART discovery is answered without a token');
      trace?.pass('dataAction', `${discovery.method} ${discovery.path} is public (SMART discovery)`);
      return PUBLIC_DISCOVERY;
    }
    const bearer = locateBearerToken(input.credentials);
    if ('reason' in bearer) {
      trace?.fail('token', bearer);
      return { refusal: bearer };
    }
    const now = this.clock();
    // explain (trace) always walks every check; decisions use the verified-token cache.
    const cache = trace || bearer.token.length > this.config.maxTokenBytes ? undefined : this.tokenCache;
    const cacheKey = cache?.keyOf(bearer.token);
    let token = cacheKey ? cache!.get(cacheKey, now) : undefined;
    // A cached verification is only as good as the keys behind it: past maxStale it is verified
    // again (and refused as issuer_unavailable if the keys cannot be refreshed).
    if (token && !this.keysFresh(token.issuer, now)) token = undefined;
    if (cache) this.counters.inc(token ? 'token_cache_hit' : 'token_cache_miss');
    if (token) {
      // The cache remembers a verification, never that a token is still good: a revocation or
      // maxTokenAgeSeconds applies to a cached token on its next decision.
      if (this.revocationActive) {
        const revoked = this.revoked(token, now, trace);
        if (revoked) return { refusal: revoked, token, cacheHit: true };
      }
      return this.decideFor(input, token, true, trace, budget);
    }
    // The b64token grammar is checked only here: a cached token is byte-identical to one that
    // passed the compact-JWS parse, which admits a subset of b64token (see locateBearerToken).
    const malformed = bearer.grammarChecked ? undefined : checkB64Token(bearer.token);
    if (malformed) {
      trace?.fail('token', malformed);
      return { refusal: malformed };
    }
    return this.verifyThenDecide(input, bearer.token, now, cacheKey ? { cache: cache!, key: cacheKey } : undefined, trace, budget);
  }

  /** Whether the issuer's keys are within maxStale; a failure of the registry is the issuer edge's. */
  private keysFresh(issuer: string, now: number): boolean {
    try {
      return this.registry.keysFresh(issuer, now);
    } catch (err) {
      throw new EdgeFailure('identity', err);
    }
  }

  /** A token the cache did not answer: verified (signature, claims) within the budget, then decided. */
  private async verifyThenDecide(
    input: DecisionInput,
    raw: string,
    now: number,
    cacheAt: { cache: VerifiedTokenCache; key: string } | undefined,
    trace: Trace | undefined,
    budget: Budget,
  ): Promise<Outcome> {
    const verified = await budget.wait(
      'identity',
      verifyAccessToken(raw, {
        registry: this.registry,
        maxTokenBytes: this.config.maxTokenBytes,
        clockSkewSeconds: this.config.clockSkewSeconds,
        now,
        audiencesFor: (authority) => this.policy.audiencesByAuthority.get(authority) ?? [],
        trace,
      }),
    );
    if ('reason' in verified) return { refusal: verified };
    if (this.revocationActive) {
      const revoked = this.revoked(verified.token, now, trace);
      if (revoked) return { refusal: revoked, token: verified.token };
    } else trace?.skip('revocation', 'not configured: the deny-list is empty and maxTokenAgeSeconds is not set');
    cacheAt?.cache.set(cacheAt.key, verified.token);
    const outcome = this.decideFor(input, verified.token, false, trace, budget);
    return outcome instanceof Promise ? await outcome : outcome;
  }

  /**
   * maxTokenAgeSeconds, then the deny-list. Both are `token_expired` with their own message: the
   * catalogue has no code for a revoked token, and a 401 with `invalid_token` is what makes a
   * client fetch a new one (RFC 6750 §3.1: "The access token provided is expired, revoked,
   * malformed, or invalid for other reasons").
   */
  private revoked(token: VerifiedToken, now: number, trace: Trace | undefined): Refusal | undefined {
    const maxAge = this.config.maxTokenAgeSeconds;
    const iat = token.claims.iat;
    if (maxAge !== undefined) {
      if (typeof iat !== 'number') {
        const r = refuse('token_expired', `the token has no \`iat\` claim, so its age cannot be checked against maxTokenAgeSeconds (${maxAge} s); have the authority issue \`iat\``, MAX_AGE_MESSAGE);
        trace?.fail('revocation', r, { found: 'no iat', expected: `iat within ${maxAge} s` });
        return r;
      }
      const age = now / 1000 - iat;
      if (age >= maxAge + this.config.clockSkewSeconds) {
        const r = refuse(
          'token_expired',
          `iat ${new Date(iat * 1000).toISOString()} is ${Math.round(age)} s ago, more than maxTokenAgeSeconds (${maxAge} s) plus the clock skew of ${this.config.clockSkewSeconds} s; get a new token`,
          MAX_AGE_MESSAGE,
        );
        trace?.fail('revocation', r, { found: `iat ${new Date(iat * 1000).toISOString()}`, expected: `iat within ${maxAge} s` });
        return r;
      }
    }
    const hit = this.denyList.size > 0 ? this.denyList.match(token.issuer, token.claims, now) : undefined;
    if (hit) {
      const e = hit.entry;
      const what = e.kind === 'oid' ? `every token of object id ${e.oid} issued before ${new Date(e.issuedBefore * 1000).toISOString()}` : `the token's ${hit.claim} (${e.kind} entry of issuer ${e.issuer})`;
      const r = refuse(
        'token_expired',
        `revoked by deny-list entry ${e.id}: ${what}, added ${new Date(e.addedAt).toISOString()}${e.note ? ` (${e.note})` : ''}; the entry lives until ${new Date(e.expiresAt).toISOString()}`,
        REVOKED_MESSAGE,
      );
      trace?.fail('revocation', r, { found: `deny-list entry ${e.id}` });
      return r;
    }
    trace?.pass(
      'revocation',
      `${maxAge === undefined ? '' : `issued ${Math.round(now / 1000 - (iat as number))} s ago, within maxTokenAgeSeconds (${maxAge} s); `}not in the deny-list (${this.denyList.size} entries)`,
    );
    return undefined;
  }

  /** Who the verified token names, and whether the request is allowed to it. */
  private decideFor(input: DecisionInput, token: VerifiedToken, cacheHit: boolean, trace: Trace | undefined, budget: Budget): Outcome | Promise<Outcome> {
    // The identity depends only on the verified claims and the (fixed) configuration, so a cached
    // token's is worked out once.
    let identity = cacheHit ? this.identities.get(token) : undefined;
    if (!identity) {
      const who = principalFromToken(token, this.policy.applicationsByAuthority.get(token.authority), trace);
      if ('reason' in who) return { refusal: who, token, cacheHit };
      const summary = summarise(who.principal);
      // A memoised summary is answered on every hit: frozen, so its JSON is made once too
      // (src/http/answer.ts).
      const unsafe = unsafeIdentityValue(summary);
      identity = {
        principal: who.principal,
        summary: cacheHit ? deepFreeze(summary) : summary,
        direct: directGrants(who.principal, this.policy),
        ...(unsafe ? { unsafe } : {}),
      };
      if (cacheHit) this.identities.set(token, identity);
    }
    if (identity.unsafe) {
      trace?.fail('principal', identity.unsafe);
      return { refusal: identity.unsafe, token, cacheHit };
    }
    const { principal, direct } = identity;

    budget.identity = identity;
    budget.cacheHit = cacheHit;
    const parsed = parseFhirRequest(input.method, input.target, this.basePath);
    if (!parsed.ok) {
      const r = refuse('action_not_permitted', `${input.method} ${pathOnly(input.target)} is not a FHIR request this service can authorize: ${parsed.problem}`);
      trace?.fail('dataAction', r);
      return { refusal: r, identity, token, cacheHit };
    }
    const request = parsed.request;
    type GrantsOutcome = { grants: Grants; report?: MembershipReport } | { refusal: Refusal };
    let membership: { memberOf: ReadonlySet<string>; report: MembershipReport } | undefined;
    const withMembership = (direct: Grants, m: NonNullable<typeof membership>): GrantsOutcome => ({
      grants: withGroupGrants(direct, m.memberOf, this.policy),
      report: m.report,
    });
    // Membership is resolved at most once per decision, and only when direct grants fall short.
    // A promise only then: a decision that needs no I/O takes no extra microtask turns here.
    const grantsFor = (r: FhirRequest): GrantsOutcome | Promise<GrantsOutcome> => {
      if (!needsMembership(principal, r, direct, this.policy)) {
        if (!membership) {
          trace?.skip('groups', 'not needed: direct grants decide this request');
          return { grants: direct };
        }
        return withMembership(direct, membership);
      }
      if (membership) return withMembership(direct, membership);
      return this.membershipWithin(budget, principal, trace).then((m) => {
        if ('refusal' in m) return m;
        membership = m;
        return withMembership(direct, m);
      });
    };
    // A narrowed search is offered only to a gateway that appends its parameters, and only for the
    // request itself: a Bundle entry's query is not the gateway's to rewrite.
    const narrow = this.narrowingGateways.size > 0 && input.gateway !== undefined && this.narrowingGateways.has(input.gateway);
    const accessWith = (r: FhirRequest, g: GrantsOutcome, narrowHere: boolean): Allowed | Refusal | Promise<Allowed | Refusal> => {
      if ('refusal' in g) return g.refusal;
      const access = decideAccess({ principal, request: r, grants: g.grants, policy: this.policy, membership: g.report, trace, narrow: narrowHere });
      return 'question' in access ? this.lookupCompartment(access, budget, trace) : access;
    };
    const decideEntry = (r: FhirRequest, narrowHere = false): Allowed | Refusal | Promise<Allowed | Refusal> => {
      const g = grantsFor(r);
      return g instanceof Promise ? g.then((resolved) => accessWith(r, resolved, narrowHere)) : accessWith(r, g, narrowHere);
    };
    const decideOne = (r: FhirRequest): Allowed | Refusal | Promise<Allowed | Refusal> => decideEntry(r);
    const outcomeOf = (access: Allowed | Refusal): Outcome =>
      'reason' in access ? { refusal: access, identity, token, cacheHit } : { allowed: access, identity, token, cacheHit };
    let access: Allowed | Refusal | Promise<Allowed | Refusal>;
    if (request.interaction !== 'batch') access = decideEntry(request, narrow);
    else if (input.bodyProblem !== undefined) access = refuse('action_not_permitted', `the bundle cannot be authorized: ${input.bodyProblem}`);
    else if (input.body !== undefined) access = this.decideBundle(input.body, request, decideOne);
    else if (this.config.unseenBundles === 'requireEveryAction') access = decideOne(request);
    else {
      // A Bundle can hold any interaction (hardDelete, SearchParameter writes, operations): one
      // whose entries were not seen is not decided as if it were a read and a write.
      const r = refuse('action_not_permitted', unseenBundleHint(input.bodyAdvice));
      trace?.fail('dataAction', r);
      access = r;
    }
    return access instanceof Promise ? access.then(outcomeOf) : outcomeOf(access);
  }

  /**
   * The FHIR server's answer to a read by id the URL could not place: allowed when it finds the
   * resource in the compartment, refused when not, indeterminate when it cannot say. A cached
   * answer is a value; only a request to the server is waited for, within the decision's budget.
   */
  private lookupCompartment(need: LookupNeeded, budget: Budget, trace: Trace | undefined): Allowed | Refusal | Promise<Allowed | Refusal> {
    const lookup = this.deps.compartmentLookup;
    if (!lookup) throw new Error('compartmentLookup is configured, and the service was built without its lookup edge');
    let answer: CompartmentAnswer | Promise<CompartmentAnswer>;
    try {
      answer = lookup.check(need.question);
    } catch (err) {
      return this.lookupFailure(err, trace);
    }
    if (!(answer instanceof Promise)) return this.lookupVerdict(need, answer, trace);
    return budget.wait('compartment lookup', answer).then(
      (a) => this.lookupVerdict(need, a, trace),
      (err: unknown) => this.lookupFailure(err, trace),
    );
  }

  private lookupVerdict(need: LookupNeeded, answer: CompartmentAnswer, trace: Trace | undefined): Allowed | Refusal {
    const q = need.question;
    const asked = `${q.resourceType}?_id=${q.id}&${q.parameter}=Patient/${q.patient}`;
    const from = answer.source === 'cache' ? 'the cached answer of the FHIR server' : 'the FHIR server';
    if (answer.found) {
      trace?.pass('compartmentLookup', `${from} finds ${q.resourceType}/${q.id} in the compartment of Patient/${q.patient} (${asked})`);
      return need.allowed;
    }
    const r = refuse(
      'insufficient_scope',
      `${from} does not find ${q.resourceType}/${q.id} in the compartment of Patient/${q.patient} (${asked} counts 0): it is another patient's, or does not exist; patient/ scopes allow reads inside the patient's own compartment only`,
    );
    trace?.fail('compartmentLookup', r);
    return r;
  }

  /** A lookup error becomes a 503 with its own hint; a budget timeout or a bug goes to indeterminateFor. */
  private lookupFailure(err: unknown, trace: Trace | undefined): Refusal {
    const cause = err instanceof EdgeFailure ? err.cause : err;
    if (!(cause instanceof CompartmentLookupError)) {
      if (err instanceof BudgetExceeded) trace?.fail('compartmentLookup', indeterminateFor(err, this.config.decisionBudgetMs));
      throw err;
    }
    const r = lookupFailed(cause);
    trace?.fail('compartmentLookup', r);
    return r;
  }

  /** Group membership, waited for within the decision's budget. */
  private membershipWithin(
    budget: Budget,
    principal: Principal,
    trace: Trace | undefined,
  ): Promise<{ memberOf: ReadonlySet<string>; report: MembershipReport } | { refusal: Refusal }> {
    return budget.wait('directory', this.resolveMembership(principal, trace));
  }

  /**
   * A batch or transaction Bundle: each entry is decided like a request of its own and the
   * bundle is allowed only if every entry is; the first refused entry is named in the hint.
   */
  private async decideBundle(
    body: unknown,
    bundleRequest: FhirRequest,
    decideOne: (r: FhirRequest) => Allowed | Refusal | Promise<Allowed | Refusal>,
  ): Promise<Allowed | Refusal> {
    const bundle = readBundle(body);
    if ('problem' in bundle) return refuse('action_not_permitted', `the bundle cannot be authorized: ${bundle.problem}`);
    // An empty Bundle changes nothing, but is answered only to a principal granted something at all.
    if (bundle.entries.length === 0) return decideOne({ ...bundleRequest, requires: ANY_DATA_ACTION });
    const actions = new Set<DataAction>();
    const compartments = new Set<string>();
    for (const [i, entry] of bundle.entries.entries()) {
      const parsed = parseFhirRequest(entry.method, entry.url.startsWith('/') ? entry.url : `/${entry.url}`, ROOT_BASE_PATH);
      if (!parsed.ok) return refuse('action_not_permitted', `bundle entry ${i} (${entry.method} ${pathOnly(entry.url)}) is not a FHIR request this service can authorize: ${parsed.problem}`);
      if (parsed.request.interaction === 'batch') return refuse('action_not_permitted', `bundle entry ${i} is itself a batch; nested bundles are refused`);
      // FHIR R4 http.html#transaction: a POST entry creates a resource of the type of its
      // `resource`; a server may go by that rather than the URL, so the two must agree.
      if (RESOURCE_WRITES.has(parsed.request.interaction)) {
        const type = entry.resourceType;
        if (type !== parsed.request.resourceType)
          return refuse(
            'action_not_permitted',
            `bundle entry ${i} (${entry.method} ${pathOnly(entry.url)}) ${type === undefined ? 'has no resource.resourceType' : `carries a ${JSON.stringify(type.slice(0, 64))} resource`}, and its request.url names ${parsed.request.resourceType}; the resource type and the URL must agree`,
          );
      }
      const verdict = await decideOne(parsed.request);
      if ('reason' in verdict) return refuse(verdict.reason, `bundle entry ${i} (${entry.method} ${pathOnly(entry.url)}) is refused: ${verdict.hint}`);
      verdict.dataActions.forEach((a) => actions.add(a));
      if (verdict.compartment) compartments.add(verdict.compartment);
    }
    // One delegated compartment can be enforced upstream; entries in different ones cannot.
    if (compartments.size > 1) return refuse('insufficient_scope', `bundle entries need different patient compartments (${[...compartments].join(', ')})`);
    return { ok: true, dataActions: [...actions].sort(), ...(compartments.size ? { compartment: [...compartments][0]! } : {}) };
  }

  /**
   * Group membership, stopping at the first answer: the token's `groups` claim (unless
   * it signals overage), the snapshot's expanded index (O(1) per group), then Graph
   * checkMemberGroups on a miss.
   */
  private async resolveMembership(
    principal: Principal,
    trace: Trace | undefined,
  ): Promise<{ memberOf: ReadonlySet<string>; report: MembershipReport } | { refusal: Refusal }> {
    const oid = principal.objectId!;
    // Lookups by membership, never a walk of the allow-list: it may hold 100k ids.
    const isCandidate = (g: string) => g !== oid && this.policy.byObject.has(g);
    const count = groupCandidateCount(principal, this.policy);
    const sample = () => groupCandidates(principal, this.policy, 11);
    if (principal.groups && !principal.groupsOverage) {
      const memberOf = new Set(principal.groups.filter(isCandidate));
      trace?.pass('groups', memberOf.size ? `member of [${[...memberOf].join(', ')}] (groups claim)` : `member of none of ${count} listed id(s) (groups claim)`);
      return { memberOf, report: { checked: count, groupIds: memberOf.size ? [] : sample(), source: 'claim' } };
    }
    const now = this.clock();
    const maxStaleMs = this.config.maxStaleSeconds * 1000;
    const fromIndex = this.groupIndex.memberOf(oid, isCandidate, now, maxStaleMs);
    if (fromIndex.size > 0) {
      trace?.pass('groups', `member of [${[...fromIndex].join(', ')}] (group index)`);
      return { memberOf: fromIndex, report: { checked: count, source: 'index' } };
    }
    // A miss: from here on (Graph, hints) the full candidate list is needed.
    const candidates = groupCandidates(principal, this.policy);
    const indexed = this.groupIndex.coverage(candidates, now, maxStaleMs);
    const resolver = this.deps.membership;
    if (!resolver) {
      const detail = principal.groupsOverage
        ? 'the token signals group overage and Microsoft Graph is not configured'
        : indexed > 0
          ? `group index covers ${indexed} of them; Graph is not configured`
          : 'no groups claim, no group index, Graph not configured';
      trace?.pass('groups', `member of none (${detail})`);
      return { memberOf: new Set(), report: { checked: indexed, groupIds: candidates.slice(0, 11), source: indexed ? 'index' : 'none', detail } };
    }
    try {
      const answer = await resolver.checkMemberGroups({ objectId: oid, groupIds: candidates, budgetMs: this.config.directoryBudgetMs });
      trace?.pass('groups', answer.memberOf.size ? `member of [${[...answer.memberOf].join(', ')}] (${answer.source})` : `member of none of ${candidates.length} listed id(s) (${answer.source})`);
      return { memberOf: answer.memberOf, report: { checked: candidates.length, groupIds: candidates.slice(0, 11), source: answer.source } };
    } catch (err) {
      if (!(err instanceof DirectoryUnavailableError)) throw err;
      // Within maxStale an outage changes no decision: a fresh index covering every listed group
      // has already answered "member of none", so that answer stands.
      if (indexed === candidates.length && candidates.length > 0) {
        trace?.pass('groups', `member of none of ${candidates.length} listed id(s) (group index; Graph unavailable: ${err.message})`);
        return { memberOf: new Set(), report: { checked: candidates.length, groupIds: candidates.slice(0, 11), source: 'index', detail: 'Graph unavailable' } };
      }
      const r = refuse('directory_unavailable', `group membership of ${oid} in ${candidates.length} listed id(s) is needed; Microsoft Graph did not answer (${err.message}) and no cached answer is younger than maxStaleSeconds`);
      trace?.fail('groups', r);
      return { refusal: r };
    }
  }

  /** Fetches discovery and keys of every authority; failures keep what was there. */
  async refreshIssuers(): Promise<string[]> {
    return this.registry.refreshAll();
  }

  tokenCacheStats(): { entries: number; bytes: number; evictions: number } | undefined {
    return this.tokenCache?.stats();
  }

  issuerHealth(): IssuerHealth[] {
    return this.registry.health();
  }
}

type Outcome = (
  | { refusal: Refusal }
  | { allowed: { dataActions: readonly DataAction[]; compartment?: string; queryAppend?: string } }
) & { identity?: Identity; token?: VerifiedToken; cacheHit?: boolean };

const REVOKED_MESSAGE = 'The token has been revoked.';
const MAX_AGE_MESSAGE = 'The token is older than the maximum token age.';

/** The allow of a public discovery request: no principal, no data actions. */
const PUBLIC_DISCOVERY: Outcome = Object.freeze({ allowed: Object.freeze({ dataActions: Object.freeze([]) }) });

/** Who the caller is, and what does not change between its decisions under this Pdp's policy. */
interface Identity {
  readonly principal: Principal;
  /** The caller-facing summary, as decisions report it. */
  readonly summary: PrincipalSummary;
  /** Grants through its own object id and roles (no group lookups). */
  readonly direct: Grants;
  /** Set when a value the upstream is told (X-Auth-*) cannot be carried unchanged: every decision is this refusal. */
  readonly unsafe?: Refusal;
}

/**
 * Identity values travel to the upstream as header values (X-Auth-*) and as JSON fields that a
 * gateway copies into headers. RFC 9110 §5.5 allows only visible ASCII, spaces and tabs there
 * portably; rather than strip or re-encode a value into another identity, a value with anything
 * else (control characters, non-ASCII) is refused.
 */
const HEADER_SAFE = /^[\x20-\x7e]*$/;

function unsafeIdentityValue(s: PrincipalSummary): Refusal | undefined {
  const fields: Array<[string, string | undefined]> = [
    ['oid', s.objectId],
    ['tid', s.tenantId],
    ['application id', s.applicationId],
    ['fhirUser', s.fhirUser],
    ['scopes', s.scopes?.join(' ')],
  ];
  for (const [name, value] of fields) {
    if (value === undefined || HEADER_SAFE.test(value)) continue;
    let at = 0;
    let code = 0;
    for (const c of value) {
      if (!HEADER_SAFE.test(c)) {
        code = c.codePointAt(0)!;
        break;
      }
      at++;
    }
    return refuse(
      'missing_claim',
      `the ${name} claim holds U+${code.toString(16).toUpperCase().padStart(4, '0')} at character ${at}; identity values are passed to the FHIR server unchanged as header values, which carry printable ASCII only, so the token is refused: have the authority issue this claim in printable ASCII`,
    );
  }
  return undefined;
}

function summarise(p: Principal): PrincipalSummary {
  return {
    issuer: p.issuer,
    ...(p.objectId ? { objectId: p.objectId } : {}),
    ...(p.tenantId ? { tenantId: p.tenantId } : {}),
    ...(p.applicationId ? { applicationId: p.applicationId } : {}),
    ...(p.fhirUser ? { fhirUser: p.fhirUser } : {}),
    // Its own copy: a summary may be frozen (memoised identities), the principal's list is not.
    ...(p.scopes.length ? { scopes: [...p.scopes] } : {}),
  };
}

function deepFreeze(s: PrincipalSummary): PrincipalSummary {
  if (s.scopes) Object.freeze(s.scopes);
  return Object.freeze(s);
}

/** The issuer registry's timings, from configuration: the service and `check-config` fetch alike. */
export function issuerTimingsOf(config: PdpConfig): Pick<IssuerRegistryOptions, 'fetchTimeoutMs' | 'jwksRefetchCooldownMs' | 'metadataRetryMs' | 'maxStaleMs'> {
  return {
    fetchTimeoutMs: config.fetchTimeoutMs,
    jwksRefetchCooldownMs: config.jwksRefetchCooldownSeconds * 1000,
    metadataRetryMs: config.metadataRetrySeconds * 1000,
    maxStaleMs: config.maxStaleSeconds * 1000,
  };
}

/** An empty Bundle's need: any one data action (the principal is granted something). */
const ANY_DATA_ACTION: ActionRequirement = [ALL_BUT_SMART];

/** Entries that send a whole resource, whose type a server may take from the resource itself. */
const RESOURCE_WRITES: ReadonlySet<FhirRequest['interaction']> = new Set(['create', 'update', 'conditional-update']);

function unseenBundleHint(bodyAdvice: string | undefined): string {
  const how = bodyAdvice ?? 'send the Bundle with the question';
  return `a batch or transaction Bundle (POST to the FHIR base) is decided entry by entry, and its entries were not seen: ${how}; or set unseenBundles to "requireEveryAction" to allow it only to principals granted every data action`;
}

/**
 * The per-decision time budget (decisionBudgetMs). It is enforced where a decision waits on I/O
 * (keys, signature work on the thread pool, Graph): a decision answered from memory never waits,
 * so it arms no timer. Each wait names the edge it waits on, so a timeout names the right 503.
 */
class Budget {
  /** What the decision had established when it stopped (for a 503's answer and log line). */
  identity?: Identity;
  cacheHit = false;
  private readonly deadline: number;

  constructor(started: number, ms: number) {
    this.deadline = started + ms;
  }

  async wait<T>(edge: WaitedEdge, work: Promise<T>): Promise<T> {
    const left = this.deadline - performance.now();
    if (left <= 0) throw new BudgetExceeded(edge);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new BudgetExceeded(edge)), left);
      timer.unref();
    });
    try {
      return await Promise.race([work, timeout]);
    } catch (err) {
      // What the waited work threw belongs to the edge it was waited on.
      throw err instanceof BudgetExceeded || err instanceof EdgeFailure ? err : new EdgeFailure(edge, err);
    } finally {
      clearTimeout(timer);
    }
  }
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

