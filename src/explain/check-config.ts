/**
 * `fhir-pdp check-config`: what is wrong with a configuration before a token ever meets it.
 * Offline: the schema (every problem by JSON path: unknown settings and data actions, duplicate
 * object ids, roles and client ids) and lints for common mistakes. Online: each authority's
 * discovery documents and key sets, fetched by the same IssuerRegistry the service uses, so
 * "reachable" here means reachable for the service; and, when Graph is configured, what kind of
 * directory object each access policy's id names.
 */
import type { Client } from '@microsoft/microsoft-graph-client';
import { ConfigError } from '../config/load.js';
import type { PdpConfig } from '../config/schema.js';
import { isGuid } from '../core/guid.js';
import { DirectoryLookupError, getDirectoryObjectKind, type DirectoryObjectKind } from '../directory/object-kind.js';
import { issuerTimingsOf } from '../decision/pipeline.js';
import { IssuerRegistry } from '../identity/issuers.js';

export type Severity = 'error' | 'warning';

export interface Finding {
  readonly severity: Severity;
  /** JSON path of the setting concerned, e.g. `accessPolicies[2].objectId`; `$` for the whole. */
  readonly path: string;
  readonly message: string;
}

export interface IssuerCheck {
  readonly issuer: string;
  readonly discoveryUrl: string;
  readonly jwksUri: string;
  /** Keys usable for verification (encryption, symmetric and weak keys are not counted). */
  readonly keys: number;
  readonly kids: readonly string[];
  readonly algorithms: readonly string[];
}

export interface AuthorityCheck {
  readonly path: string;
  readonly authority: string;
  readonly reachable: boolean;
  readonly issuers: readonly IssuerCheck[];
  readonly problems: readonly string[];
}

export interface DirectoryObjectCheck {
  readonly path: string;
  readonly objectId: string;
  readonly kind: DirectoryObjectKind;
}

export interface DirectoryCheck {
  readonly objects: readonly DirectoryObjectCheck[];
  /** Set when Graph could not answer; lookups stop at the first such failure. */
  readonly error?: string;
}

export interface ConfigCheckReport {
  readonly source: string;
  /** The configuration passed the schema (the service would start with it). */
  readonly valid: boolean;
  readonly online: boolean;
  readonly findings: readonly Finding[];
  readonly authorities: readonly AuthorityCheck[];
  readonly directory?: DirectoryCheck;
}

export interface CheckConfigOptions {
  /** Fetch discovery, keys and directory objects. Default true. */
  readonly online?: boolean;
  readonly fetch?: typeof fetch;
  /** Builds the Graph client for the configuration's `graph` section; called only when it has one. */
  readonly graphClientFor?: (graph: NonNullable<PdpConfig['graph']>) => Client | Promise<Client>;
  readonly clock?: () => number;
  /** Most access-policy ids looked up in Graph. Default 500. */
  readonly maxDirectoryLookups?: number;
}

const DIRECTORY_CONCURRENCY = 4;
const MULTI_TENANT_SEGMENTS = new Set(['common', 'organizations', 'consumers']);

/**
 * Checks the configuration that `load` returns (it may throw ConfigError: its problems become the
 * report's errors, and nothing online is tried).
 */
export async function checkConfig(source: string, load: () => PdpConfig, options: CheckConfigOptions = {}): Promise<ConfigCheckReport> {
  const online = options.online ?? true;
  let config: PdpConfig;
  try {
    config = load();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return {
      source,
      valid: false,
      online: false,
      findings: err.problems.map((p) => ({ severity: 'error' as const, path: p.path, message: p.message })),
      authorities: [],
    };
  }
  const findings: Finding[] = lintConfig(config);
  if (!online) return { source, valid: true, online, findings, authorities: [] };

  const authorities = await Promise.all(authorityPaths(config).map(([path, authority]) => checkAuthority(path, authority, config, options)));
  for (const a of authorities) findings.push(...authorityFindings(a));
  let directory: DirectoryCheck | undefined;
  if (config.graph && options.graphClientFor) {
    directory = await checkDirectoryObjects(config, await options.graphClientFor(config.graph), options.maxDirectoryLookups ?? 500);
    findings.push(...directoryFindings(directory, config));
  }
  return { source, valid: true, online, findings, authorities, ...(directory ? { directory } : {}) };
}

function authorityPaths(config: PdpConfig): Array<[string, string]> {
  return [['authority', config.authority], ...config.smartIdentityProviders.map((p, i): [string, string] => [`smartIdentityProviders[${i}].authority`, p.authority])];
}

/** Pure lints: mistakes the schema accepts but that make tokens fail later. */
export function lintConfig(config: PdpConfig): Finding[] {
  const out: Finding[] = [];
  for (const [path, authority] of authorityPaths(config)) {
    const url = new URL(authority);
    const segments = url.pathname.split('/').filter(Boolean);
    if (/\/v2\.0$/i.test(url.pathname))
      out.push({
        severity: 'warning',
        path,
        message: `${authority} ends with /v2.0: only the v2 issuer is trusted, so Entra v1 tokens (ver "1.0", iss https://sts.windows.net/<tenant>/) will fail with untrusted_issuer; remove /v2.0 (both issuers are then read), unless the API's app manifest sets accessTokenAcceptedVersion 2`,
      });
    if (segments.some((s) => MULTI_TENANT_SEGMENTS.has(s.toLowerCase())))
      out.push({
        severity: 'error',
        path,
        message: `${authority} is a multi-tenant endpoint: its issuer is a template ("{tenantid}") that never equals a token's iss; use the tenant's own authority (…/<tenant-id>)`,
      });
    if (segments.some((s) => s === '.well-known' || s === 'oauth2' || s === 'discovery'))
      out.push({
        severity: 'error',
        path,
        message: `${authority} names an endpoint, not the authority: discovery is read from {authority}/.well-known/openid-configuration; use the issuer's base (e.g. https://login.microsoftonline.com/<tenant-id>)`,
      });
  }

  const audiences: Array<[string, string]> = [
    ...(config.audience ? [['audience', config.audience] as [string, string]] : []),
    ...config.audiences.map((a, i): [string, string] => [`audiences[${i}]`, a]),
  ];
  const seen = new Map<string, string>();
  for (const [path, a] of audiences) {
    const prior = seen.get(a);
    if (prior) out.push({ severity: 'warning', path, message: `"${a}" is listed twice (also at ${prior})` });
    else seen.set(a, path);
  }
  const smartAudiences = config.smartIdentityProviders.flatMap((p, i) => p.applications.map((a, j): [string, string] => [`smartIdentityProviders[${i}].applications[${j}].audience`, a.audience]));
  for (const [path, a] of [...audiences, ...smartAudiences])
    if (!isGuid(a) && !isAbsoluteUrl(a))
      out.push({
        severity: 'warning',
        path,
        message: `"${a}" is neither a URL nor a GUID: Entra puts the App ID URI (api://…, https://…) or the client id (a GUID) in aud; check the value against a real token`,
      });

  if (config.accessPolicies.length === 0 && config.roles.length === 0 && config.smartIdentityProviders.length === 0)
    out.push({ severity: 'warning', path: '$', message: 'no accessPolicies, roles or smartIdentityProviders: nothing is granted, every verified token will be refused with principal_not_allowed' });
  return out;
}

function isAbsoluteUrl(value: string): boolean {
  if (!/^[a-z][a-z0-9+.-]*:\/\/\S+$/i.test(value)) return false;
  try {
    new URL(value);
    return true;
  } catch {
    return false;
  }
}

async function checkAuthority(path: string, authority: string, config: PdpConfig, options: CheckConfigOptions): Promise<AuthorityCheck> {
  const registry = new IssuerRegistry({
    authorities: [authority],
    ...issuerTimingsOf(config),
    clock: options.clock ?? Date.now,
    ...(options.fetch ? { fetch: options.fetch } : {}),
  });
  const problems = await registry.refreshAll();
  const issuers = registry.records().map((r) => ({
    issuer: r.issuer,
    discoveryUrl: r.discoveryUrl,
    jwksUri: r.jwksUri,
    keys: r.keys.length,
    kids: r.keys.map((k) => k.kid ?? '(no kid)'),
    algorithms: r.algorithms,
  }));
  return { path, authority, reachable: issuers.length > 0, issuers, problems };
}

function authorityFindings(a: AuthorityCheck): Finding[] {
  const out: Finding[] = [];
  if (!a.reachable) {
    out.push({ severity: 'error', path: a.path, message: `${a.authority} is not reachable: ${a.problems.join('; ') || 'no usable discovery document'}` });
    return out;
  }
  for (const p of a.problems) out.push({ severity: 'warning', path: a.path, message: p });
  for (const i of a.issuers) {
    if (i.keys === 0) out.push({ severity: 'error', path: a.path, message: `issuer ${i.issuer} publishes no usable signing key at ${i.jwksUri}` });
    if (i.algorithms.length === 0)
      out.push({ severity: 'error', path: a.path, message: `issuer ${i.issuer} advertises no asymmetric signing algorithm (id_token_signing_alg_values_supported)` });
    if (/\{tenantid\}/i.test(i.issuer))
      out.push({ severity: 'error', path: a.path, message: `issuer ${i.issuer} is a multi-tenant template that never equals a token's iss; use the tenant's own authority` });
  }
  return out;
}

async function checkDirectoryObjects(config: PdpConfig, client: Client, maxLookups: number): Promise<DirectoryCheck> {
  const wanted = config.accessPolicies.slice(0, maxLookups).map((p, i) => ({ path: `accessPolicies[${i}].objectId`, objectId: p.objectId }));
  const objects: DirectoryObjectCheck[] = [];
  let error: string | undefined;
  let next = 0;
  // A few lookups at a time; the first failure stops the rest (the same failure would repeat).
  const worker = async (): Promise<void> => {
    while (error === undefined && next < wanted.length) {
      const item = wanted[next++]!;
      try {
        objects.push({ ...item, kind: await getDirectoryObjectKind(client, item.objectId) });
      } catch (err) {
        if (!(err instanceof DirectoryLookupError)) throw err;
        error ??= `Microsoft Graph could not answer for ${item.objectId}: ${err.message}`;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(DIRECTORY_CONCURRENCY, wanted.length) }, worker));
  objects.sort((a, b) => indexOf(a.path) - indexOf(b.path));
  return { objects, ...(error ? { error } : {}) };
}

function indexOf(path: string): number {
  return Number(/\[(\d+)\]/.exec(path)?.[1] ?? 0);
}

function directoryFindings(d: DirectoryCheck, config: PdpConfig): Finding[] {
  const out: Finding[] = [];
  if (d.error) out.push({ severity: 'warning', path: 'graph', message: `${d.error}; access policy ids were not all checked (the Graph identity needs Directory.Read.All or Application.Read.All)` });
  if (config.accessPolicies.length > d.objects.length && !d.error)
    out.push({ severity: 'warning', path: 'accessPolicies', message: `only the first ${d.objects.length} of ${config.accessPolicies.length} object ids were looked up` });
  for (const o of d.objects) {
    if (o.kind === 'application')
      out.push({
        severity: 'error',
        path: o.path,
        message: `${o.objectId} is an application (app registration) object id; tokens carry the service principal's object id (oid): use the Object ID shown under Enterprise applications instead`,
      });
    else if (o.kind === 'not-found')
      out.push({ severity: 'warning', path: o.path, message: `${o.objectId} names no object in the directory Graph answers for (deleted, or another tenant)` });
    else if (o.kind === 'unknown')
      out.push({ severity: 'warning', path: o.path, message: `${o.objectId} is neither a user, a group nor a service principal; it can never match a token` });
  }
  return out;
}

/** 0: no errors (warnings allowed); 1: errors found; 2: the configuration is invalid. */
export function checkExitCode(report: ConfigCheckReport): 0 | 1 | 2 {
  if (!report.valid) return 2;
  return report.findings.some((f) => f.severity === 'error') ? 1 : 0;
}

export function formatConfigCheck(r: ConfigCheckReport): string[] {
  const lines: string[] = [];
  lines.push(`Configuration ${r.source}: ${r.valid ? 'valid (schema)' : 'INVALID'}`);
  if (r.authorities.length) {
    lines.push('', 'Authorities');
    for (const a of r.authorities) {
      lines.push(`  ${a.path}  ${a.authority}  ${a.reachable ? 'reachable' : 'NOT REACHABLE'}`);
      for (const i of a.issuers) {
        lines.push(`    issuer ${i.issuer}`);
        lines.push(`      discovery   ${i.discoveryUrl}`);
        lines.push(`      keys        ${i.keys} (${i.kids.join(', ')}) from ${i.jwksUri}`);
        lines.push(`      algorithms  ${i.algorithms.join(', ') || '(none)'}`);
      }
    }
  } else if (r.valid && !r.online) {
    lines.push('', 'Authorities: not contacted (--offline)');
  }
  if (r.directory) {
    lines.push('', 'Access policy object ids (Microsoft Graph)');
    for (const o of r.directory.objects) lines.push(`  ${o.path}  ${o.objectId}  ${o.kind}`);
    if (r.directory.error) lines.push(`  ${r.directory.error}`);
  }
  const errors = r.findings.filter((f) => f.severity === 'error');
  const warnings = r.findings.filter((f) => f.severity === 'warning');
  if (r.findings.length) {
    lines.push('', 'Findings');
    for (const f of [...errors, ...warnings]) lines.push(`  ${f.severity === 'error' ? 'error  ' : 'warning'}  ${f.path}: ${f.message}`);
  }
  lines.push('', `${errors.length} error(s), ${warnings.length} warning(s)`);
  return lines;
}
