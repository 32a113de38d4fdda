/**
 * The App Service / Functions managed identity endpoint, on 127.0.0.1
 * (https://learn.microsoft.com/azure/app-service/overview-managed-identity#rest-endpoint-reference):
 * GET ?resource=…&api-version=2019-08-01[&client_id=…] with the X-IDENTITY-HEADER secret, answering
 * { access_token, expires_on, resource, token_type, client_id }. @azure/identity reaches it through
 * IDENTITY_ENDPOINT and IDENTITY_HEADER, as on Azure.
 *
 * Its tokens are Entra-shaped JWTs (aud, iss of an Entra STS, tid, oid, appid, iat, nbf, exp) signed
 * with a throwaway HMAC key: Azurite's basic OAuth reads those claims and checks no signature, and
 * a FHIR server stand-in compares the token it was sent with `issued`.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { SignJWT } from 'jose';
import { closeServer, listenOnLoopback } from './loopback.js';

export interface ManagedIdentityRequest {
  readonly resource: string | null;
  readonly clientId: string | null;
  readonly identityHeaderOk: boolean;
}

export interface ManagedIdentityOptions {
  /** Entra tenant of the tokens' issuer. */
  readonly tenantId?: string;
  /** client_id answered when the request names none (the system-assigned identity). */
  readonly defaultClientId?: string;
}

export class ManagedIdentityEndpoint {
  /** The X-IDENTITY-HEADER value the endpoint accepts: set it as IDENTITY_HEADER. */
  readonly identityHeader = randomBytes(18).toString('base64url');
  readonly requests: ManagedIdentityRequest[] = [];
  readonly issued: string[] = [];
  /** The tokens' `aud`; undefined: the `resource` asked for. */
  audience: string | undefined;
  /** Answer every request 401, as the endpoint does for an identity not assigned to the app. */
  refuse = false;
  private readonly tenantId: string;
  private readonly defaultClientId: string;

  private constructor(
    private readonly server: Server,
    /** IDENTITY_ENDPOINT. */
    readonly url: string,
    options: ManagedIdentityOptions,
  ) {
    this.tenantId = options.tenantId ?? '72f988bf-86f1-41af-91ab-2d7cd011db47';
    this.defaultClientId = options.defaultClientId ?? randomUUID();
  }

  static async start(options: ManagedIdentityOptions = {}): Promise<ManagedIdentityEndpoint> {
    const server = createServer();
    const port = await listenOnLoopback(server);
    const endpoint = new ManagedIdentityEndpoint(server, `http://127.0.0.1:${port}/msi/token`, options);
    server.on('request', (req, res) => void endpoint.answer(req, res));
    return endpoint;
  }

  private async answer(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const request = {
      resource: url.searchParams.get('resource'),
      clientId: url.searchParams.get('client_id'),
      identityHeaderOk: req.headers['x-identity-header'] === this.identityHeader,
    };
    this.requests.push(request);
    if (!request.identityHeaderOk || this.refuse) {
      res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":"invalid header"}');
      return;
    }
    const now = Math.floor(Date.now() / 1000);
    const clientId = request.clientId ?? this.defaultClientId;
    const token = await new SignJWT({ oid: randomUUID(), tid: this.tenantId, appid: clientId })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setAudience(this.audience ?? request.resource ?? '')
      .setIssuer(`https://sts.windows.net/${this.tenantId}/`)
      .setIssuedAt(now)
      .setNotBefore(now - 60)
      .setExpirationTime(now + 3600)
      .sign(randomBytes(32));
    this.issued.push(token);
    res
      .writeHead(200, { 'content-type': 'application/json' })
      .end(JSON.stringify({ access_token: token, expires_on: String(now + 3600), resource: request.resource, token_type: 'Bearer', client_id: clientId }));
  }

  close(): Promise<void> {
    return closeServer(this.server);
  }
}
