/**
 * A test host for the real `@azure/functions` library: it plays the part of the Node.js language
 * worker (Azure/azure-functions-nodejs-worker) and of the .NET Functions host's HTTP front door,
 * so tests run the app through the same code the worker runs in Azure.
 *
 * What it does, as the worker does:
 * - provides `@azure/functions-core`, the module the library `require`s to reach the worker, by
 *   intercepting `Module.prototype.require` (the worker's `setupCoreModule`); the library then
 *   calls `setProgrammingModel`, `registerFunction` and `registerHook` on it;
 * - reads `main` from the app's package.json, expands the glob against the app root and imports
 *   each file as a native ES module (the worker's `startApp` / `loadScriptFile`);
 * - runs the `appStart` hooks, then asks the programming model for its capabilities (which locks
 *   `app.setup`), and refuses to start when either fails;
 * - invokes a function through the library's invocation model (`getInvocationModel` →
 *   `getArguments` → preInvocation hooks → `invokeFunction` → postInvocation hooks →
 *   `getResponse`), with the invocation request the host sends over gRPC (RpcHttpData / timer JSON);
 * - runs the `appTerminate` hooks on stop.
 *
 * And as the .NET host does for HTTP: the route prefix from host.json (`extensions.http.routePrefix`,
 * default `api`), route templates with `{name}` and catch-all `{*name}` parameters, the method
 * list, the function key for `authLevel: function` (header `x-functions-key` or query `code`;
 * 401 without it), repeated request headers joined with "," into one value (ASP.NET Core's
 * `StringValues.ToString()`), the body as bytes (the worker announces `RawHttpBodyBytes`).
 *
 * What it does not do (docs/azure-functions.md): the .NET host's own routing edge cases and
 * route constraints, its HTTP throttles (`maxConcurrentRequests`, `maxOutstandingRequests`,
 * `dynamicThrottlesEnabled`), timer schedules and the timer's singleton lock (a test fires a timer
 * by name), HTTP streaming over the worker's proxy (`app.setup({ enableHttpStream: true })`
 * makes start() fail), and scale-out.
 *
 * One host per process: the library keeps the core module, its programming model and its setup
 * lock in module state, and an ES module graph is imported once. vitest runs each test file in
 * its own process (pool `forks`), so each file may start one host.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Module } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { glob } from 'tinyglobby';

/** A function as the library registered it, in the words of its binding metadata. */
export interface FunctionRegistration {
  readonly name: string;
  /** The trigger binding's type: `httpTrigger`, `timerTrigger`, ... */
  readonly trigger: string;
  readonly route?: string;
  readonly methods?: readonly string[];
  readonly authLevel?: string;
  readonly schedule?: string;
  readonly runOnStartup?: boolean;
}

export interface HostLogLine {
  readonly level: string;
  readonly category: string;
  readonly message: string;
  readonly functionName?: string;
}

export interface HostHttpRequest {
  readonly method: string;
  /** Path and query as the client sent them, e.g. `/api/decide/Patient/1?code=...`. */
  readonly path: string;
  /** A repeated header is given as an array; the host joins it into one value. */
  readonly headers?: Readonly<Record<string, string | readonly string[]>>;
  readonly body?: string | Uint8Array;
}

export interface HostHttpResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Buffer;
  /** The function that answered; undefined when the host answered itself (404, 405, 401). */
  readonly functionName?: string;
  text(): string;
  json(): Record<string, unknown>;
}

export interface FunctionsHostOptions {
  /** The function app directory: package.json and host.json live here. */
  readonly appRoot: string;
  /** Keys the host accepts for `authLevel: function` (function and host keys). */
  readonly functionKeys?: readonly string[];
  /** The host's base URL in the request URLs it builds. */
  readonly baseUrl?: string;
}

export type FunctionsHostErrorCode = 'already_started' | 'no_entry_point' | 'app_start_failed' | 'unsupported' | 'unknown_function';

export class FunctionsHostError extends Error {
  override readonly name = 'FunctionsHostError';
  constructor(
    readonly code: FunctionsHostErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

// The @azure/functions-core surface this host implements (the worker's types are not published).
type RpcTypedData = Record<string, unknown>;
interface CoreFunctionMetadata {
  name: string;
  bindings: Record<string, { type: string; direction: string; [k: string]: unknown }>;
}
type FunctionCallback = (...args: unknown[]) => unknown;
type HookCallback = (context: unknown) => unknown;
interface InvocationModel {
  getArguments(): Promise<{ context: unknown; inputs: unknown[] }>;
  invokeFunction(context: unknown, inputs: unknown[], handler: FunctionCallback): Promise<unknown>;
  getResponse(context: unknown, result: unknown): Promise<{ returnValue?: RpcTypedData; outputData?: unknown[] }>;
}
interface ProgrammingModel {
  name: string;
  version: string;
  getInvocationModel(coreCtx: unknown): InvocationModel | Promise<InvocationModel>;
  getCapabilities(capabilities: Record<string, string>): Promise<Record<string, string>>;
}

interface RegisteredFunction {
  readonly metadata: CoreFunctionMetadata;
  readonly callback: FunctionCallback;
  readonly registration: FunctionRegistration;
  readonly triggerName: string;
  readonly segments?: readonly RouteSegment[];
}

type RouteSegment = { kind: 'literal'; text: string } | { kind: 'param'; name: string } | { kind: 'catchAll'; name: string };

let coreInstalled = false;

class Disposable {
  constructor(private readonly onDispose: () => void) {}
  dispose(): void {
    this.onDispose();
  }
}

export class FunctionsTestHost {
  readonly logs: HostLogLine[] = [];
  private readonly functions = new Map<string, RegisteredFunction>();
  private readonly hooks = new Map<string, HookCallback[]>();
  private readonly appHookData: Record<string, unknown> = {};
  private programmingModel?: ProgrammingModel;
  private startupFinished = false;
  private stopped = false;
  private readonly functionKeys: ReadonlySet<string>;
  private readonly baseUrl: string;
  readonly routePrefix: string;

  private constructor(readonly options: FunctionsHostOptions) {
    this.functionKeys = new Set(options.functionKeys ?? []);
    this.baseUrl = options.baseUrl ?? 'http://localhost:7071';
    const hostJson = JSON.parse(readFileSync(join(options.appRoot, 'host.json'), 'utf8')) as { extensions?: { http?: { routePrefix?: string } } };
    this.routePrefix = (hostJson.extensions?.http?.routePrefix ?? 'api').replace(/^\/+|\/+$/g, '');
  }

  /** Loads the app and runs its start-up; rejects (app_start_failed, with the cause) as the worker's init would fail. */
  static async start(options: FunctionsHostOptions): Promise<FunctionsTestHost> {
    if (coreInstalled) throw new FunctionsHostError('already_started', 'one Functions test host per process: the library keeps its worker connection in module state');
    coreInstalled = true;
    const host = new FunctionsTestHost(options);
    host.installCoreModule();
    await host.loadEntryPoints();
    try {
      await host.runHooks('appStart', { hookData: {}, appHookData: host.appHookData, functionAppDirectory: options.appRoot });
    } catch (err) {
      throw new FunctionsHostError('app_start_failed', `an appStart hook failed: ${(err as Error).message}`, { cause: err });
    }
    const capabilities = await host.model().getCapabilities({});
    if (capabilities.HttpUri) throw new FunctionsHostError('unsupported', 'the app enabled HTTP streaming (app.setup({ enableHttpStream: true })), which this host does not proxy');
    host.startupFinished = true;
    return host;
  }

  /** Every function the app registered, in registration order. */
  get registrations(): FunctionRegistration[] {
    return [...this.functions.values()].map((f) => f.registration);
  }

  /** Hook names and how many callbacks each has. */
  hookCounts(): Record<string, number> {
    return Object.fromEntries([...this.hooks].map(([name, list]) => [name, list.length]));
  }

  /** The worker's `setupCoreModule`: `require('@azure/functions-core')` answers with this host. */
  private installCoreModule(): void {
    const coreApi = {
      version: '3.12.0',
      hostVersion: '4.1040.0',
      setProgrammingModel: (model: ProgrammingModel) => {
        this.programmingModel = model;
      },
      getProgrammingModel: () => this.programmingModel,
      registerFunction: (metadata: CoreFunctionMetadata, callback: FunctionCallback) => this.registerFunction(metadata, callback),
      registerHook: (hookName: string, callback: HookCallback) => {
        const list = this.hooks.get(hookName) ?? [];
        list.push(callback);
        this.hooks.set(hookName, list);
        return new Disposable(() => list.splice(list.indexOf(callback), 1));
      },
      log: (level: string, category: string, message: string) => void this.logs.push({ level, category, message }),
      Disposable,
    };
    const proto = Module.prototype as unknown as { require: (id: string) => unknown };
    proto.require = new Proxy(proto.require, {
      apply(target, thisArg, args: unknown[]) {
        return args[0] === '@azure/functions-core' ? coreApi : Reflect.apply(target, thisArg, args);
      },
    });
  }

  private registerFunction(metadata: CoreFunctionMetadata, callback: FunctionCallback): Disposable {
    // The worker: "A function can only be registered during app startup."
    if (this.startupFinished) throw new Error('A function can only be registered during app startup.');
    if (this.functions.has(metadata.name.toLowerCase())) throw new Error(`duplicate function name "${metadata.name}"`);
    const [triggerName, trigger] = Object.entries(metadata.bindings).find(([, b]) => b.direction === 'in' && /trigger$/i.test(b.type)) ?? [];
    if (!triggerName || !trigger) throw new Error(`function "${metadata.name}" has no trigger binding`);
    const registration: FunctionRegistration = {
      name: metadata.name,
      trigger: trigger.type,
      ...(typeof trigger.route === 'string' ? { route: trigger.route } : {}),
      ...(Array.isArray(trigger.methods) ? { methods: (trigger.methods as string[]).map((m) => m.toUpperCase()) } : {}),
      ...(typeof trigger.authLevel === 'string' ? { authLevel: trigger.authLevel } : {}),
      ...(typeof trigger.schedule === 'string' ? { schedule: trigger.schedule } : {}),
      ...(typeof trigger.runOnStartup === 'boolean' ? { runOnStartup: trigger.runOnStartup } : {}),
    };
    const isHttp = trigger.type.toLowerCase() === 'httptrigger';
    this.functions.set(metadata.name.toLowerCase(), {
      metadata,
      callback,
      registration,
      triggerName,
      ...(isHttp ? { segments: parseRoute(registration.route ?? metadata.name) } : {}),
    });
    return new Disposable(() => this.functions.delete(metadata.name.toLowerCase()));
  }

  /** The worker's `loadEntryPointFile`: `main` is a glob relative to the app root; ES modules are imported. */
  private async loadEntryPoints(): Promise<void> {
    const pkg = JSON.parse(readFileSync(join(this.options.appRoot, 'package.json'), 'utf8')) as { main?: string; type?: string };
    if (!pkg.main) throw new FunctionsHostError('no_entry_point', 'package.json has no "main"');
    const files = (await glob(pkg.main, { cwd: this.options.appRoot })).sort();
    if (files.length === 0) throw new FunctionsHostError('no_entry_point', `no file matches "main": "${pkg.main}" (run npm run build)`);
    for (const file of files) {
      const esm = file.endsWith('.mjs') || (!file.endsWith('.cjs') && pkg.type === 'module');
      const full = join(this.options.appRoot, file);
      // A native import, as the worker's eval('import(...)'): not the test runner's module graph.
      if (esm) await nativeImport(pathToFileURL(full).href);
      else Module.createRequire(full)(full);
    }
  }

  private model(): ProgrammingModel {
    if (!this.programmingModel) throw new FunctionsHostError('no_entry_point', 'no programming model was set: the app never imported @azure/functions');
    return this.programmingModel;
  }

  private async runHooks(name: string, context: unknown): Promise<void> {
    for (const hook of [...(this.hooks.get(name) ?? [])]) await hook(context);
  }

  /** An HTTP request as the host routes it: 404 without a route, 405 for another method, 401 without a function key. */
  async http(request: HostHttpRequest): Promise<HostHttpResponse> {
    const url = new URL(request.path, this.baseUrl);
    const path = url.pathname.replace(/^\/+/, '');
    const prefix = this.routePrefix ? `${this.routePrefix}/` : '';
    if (prefix && !(path.toLowerCase() + '/').startsWith(prefix.toLowerCase())) return hostAnswer(404);
    const routePath = path.slice(prefix.length).replace(/\/+$/, '');
    const matches = [...this.functions.values()]
      .filter((f) => f.segments)
      .map((f) => ({ f, params: matchRoute(f.segments!, routePath) }))
      .filter((m): m is { f: RegisteredFunction; params: Record<string, string> } => m.params !== undefined)
      .sort((a, b) => routePrecedence(b.f.segments!) - routePrecedence(a.f.segments!));
    if (matches.length === 0) return hostAnswer(404);
    const method = request.method.toUpperCase();
    const match = matches.find((m) => m.f.registration.methods?.includes(method) ?? true);
    if (!match) return hostAnswer(405);
    const headers = joinHeaders(request.headers ?? {});
    const authLevel = match.f.registration.authLevel?.toLowerCase() ?? 'anonymous';
    if (authLevel !== 'anonymous') {
      const key = headers['x-functions-key'] ?? url.searchParams.get('code') ?? undefined;
      if (authLevel !== 'function' || !key || !this.functionKeys.has(key)) return hostAnswer(401);
    }
    const query = Object.fromEntries(url.searchParams);
    const body = request.body === undefined ? undefined : typeof request.body === 'string' ? Buffer.from(request.body) : Buffer.from(request.body);
    const http: RpcTypedData = {
      method,
      url: url.href,
      headers,
      nullableHeaders: nullable(headers),
      query,
      nullableQuery: nullable(query),
      params: match.params,
      nullableParams: nullable(match.params),
      ...(body ? { body: { bytes: new Uint8Array(body) } } : {}),
    };
    const triggerMetadata: Record<string, RpcTypedData> = {
      Headers: { json: JSON.stringify(headers) },
      Query: { json: JSON.stringify(query) },
      ...Object.fromEntries(Object.entries(match.params).map(([k, v]) => [k, { string: v }])),
    };
    const response = await this.invoke(match.f, { http }, triggerMetadata).catch((err: unknown) => {
      this.logs.push({ level: 'error', category: 'system', message: `Executed '${match.f.metadata.name}' (Failed): ${(err as Error).message}`, functionName: match.f.metadata.name });
      return undefined;
    });
    // The host answers 500 when the function throws; an HTTP function that returns nothing gets 204.
    if (!response) return hostAnswer(500, match.f.metadata.name);
    const out = response.returnValue?.http as { statusCode?: string; headers?: Record<string, string>; body?: RpcTypedData } | undefined;
    if (!out) return hostAnswer(204, match.f.metadata.name);
    return answer(Number(out.statusCode ?? 200), out.headers ?? {}, typedDataBytes(out.body), match.f.metadata.name);
  }

  /** Fires a timer function by name, as its schedule would (no schedule, no singleton lock here). */
  async timer(name: string, options: { isPastDue?: boolean } = {}): Promise<void> {
    const f = this.functions.get(name.toLowerCase());
    if (!f || f.registration.trigger.toLowerCase() !== 'timertrigger') throw new FunctionsHostError('unknown_function', `no timer function "${name}"`);
    const now = Date.now();
    // The timer trigger's payload (PascalCase on the wire; the library camel-cases it).
    const payload = {
      Schedule: { AdjustForDST: true },
      ScheduleStatus: { Last: new Date(now - 300_000).toISOString(), Next: new Date(now + 300_000).toISOString(), LastUpdated: new Date(now).toISOString() },
      IsPastDue: options.isPastDue ?? false,
    };
    await this.invoke(f, { json: JSON.stringify(payload) }, {});
  }

  private async invoke(f: RegisteredFunction, triggerData: RpcTypedData, triggerMetadata: Record<string, RpcTypedData>) {
    const invocationId = randomUUID();
    const coreCtx = {
      invocationId,
      state: undefined as string | undefined,
      metadata: { name: f.metadata.name, bindings: f.metadata.bindings },
      request: { invocationId, functionId: f.metadata.name, inputData: [{ name: f.triggerName, data: triggerData }], triggerMetadata },
      log: (level: string, category: string, message: string) => void this.logs.push({ level, category, message, functionName: f.metadata.name }),
    };
    const model = await this.model().getInvocationModel(coreCtx);
    const { context, inputs } = await model.getArguments();
    const hookData: Record<string, unknown> = {};
    const pre = { hookData, appHookData: this.appHookData, invocationContext: context, functionCallback: f.callback, inputs };
    coreCtx.state = 'preInvocationHooks';
    await this.runHooks('preInvocation', pre);
    coreCtx.state = 'invocation';
    const post: Record<string, unknown> = { hookData, appHookData: this.appHookData, invocationContext: context, inputs: pre.inputs, result: null, error: null };
    try {
      post.result = await model.invokeFunction(context, pre.inputs, pre.functionCallback);
    } catch (err) {
      post.error = err;
    }
    coreCtx.state = 'postInvocationHooks';
    await this.runHooks('postInvocation', post);
    coreCtx.state = undefined;
    if (post.error) throw post.error;
    return model.getResponse(context, post.result);
  }

  /** The worker's terminate: appTerminate hooks run once. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await this.runHooks('appTerminate', { hookData: {}, appHookData: this.appHookData });
  }
}

// Kept out of the test runner's module graph, like the worker's eval('import(...)'): a real ES module import.
const nativeImport = Module.createRequire(import.meta.url)('./native-import.cjs') as (specifier: string) => Promise<unknown>;

function parseRoute(template: string): RouteSegment[] {
  return template
    .replace(/^\/+|\/+$/g, '')
    .split('/')
    .filter((s) => s.length > 0)
    .map((s): RouteSegment => {
      const param = /^\{(\*)?([A-Za-z_][A-Za-z0-9_]*)\}$/.exec(s);
      if (!param) {
        if (s.includes('{')) throw new FunctionsHostError('unsupported', `route segment "${s}" (constraints, optional or partial parameters) is not supported by this host`);
        return { kind: 'literal', text: s.toLowerCase() };
      }
      return param[1] ? { kind: 'catchAll', name: param[2]! } : { kind: 'param', name: param[2]! };
    });
}

/** ASP.NET Core route matching, the parts our routes use: literals ignore case, a catch-all takes the rest (even nothing). */
function matchRoute(segments: readonly RouteSegment[], path: string): Record<string, string> | undefined {
  const parts = path === '' ? [] : path.split('/');
  const params: Record<string, string> = {};
  for (let i = 0; i < segments.length; i++) {
    const seg = segments[i]!;
    if (seg.kind === 'catchAll') {
      const rest = parts.slice(i).map(safeDecode).join('/');
      if (rest) params[seg.name] = rest;
      return params;
    }
    const part = parts[i];
    if (part === undefined || part === '') return undefined;
    if (seg.kind === 'literal' && safeDecode(part).toLowerCase() !== seg.text) return undefined;
    if (seg.kind === 'param') params[seg.name] = safeDecode(part);
  }
  return parts.length === segments.length ? params : undefined;
}

/** Literal routes win over parameters, parameters over a catch-all (ASP.NET Core's route precedence). */
function routePrecedence(segments: readonly RouteSegment[]): number {
  return segments.reduce((score, s) => score + (s.kind === 'literal' ? 3 : s.kind === 'param' ? 2 : 0), 0) - (segments.some((s) => s.kind === 'catchAll') ? 1 : 0);
}

function safeDecode(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    return part;
  }
}

function joinHeaders(headers: Readonly<Record<string, string | readonly string[]>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    const key = name.toLowerCase();
    const values = typeof value === 'string' ? [value] : [...value];
    out[key] = out[key] === undefined ? values.join(',') : [out[key], ...values].join(',');
  }
  return out;
}

function nullable(map: Record<string, string>): Record<string, { value: string }> {
  return Object.fromEntries(Object.entries(map).map(([k, v]) => [k, { value: v }]));
}

function typedDataBytes(data: RpcTypedData | undefined): Buffer {
  if (!data) return Buffer.alloc(0);
  if (data.bytes instanceof Uint8Array) return Buffer.from(data.bytes);
  if (typeof data.string === 'string') return Buffer.from(data.string);
  if (typeof data.json === 'string') return Buffer.from(data.json);
  return Buffer.alloc(0);
}

function answer(status: number, headers: Record<string, string>, body: Buffer, functionName?: string): HostHttpResponse {
  return {
    status,
    headers: Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v])),
    body,
    ...(functionName ? { functionName } : {}),
    text: () => body.toString('utf8'),
    json: () => JSON.parse(body.toString('utf8')) as Record<string, unknown>,
  };
}

function hostAnswer(status: number, functionName?: string): HostHttpResponse {
  return answer(status, {}, Buffer.alloc(0), functionName);
}
