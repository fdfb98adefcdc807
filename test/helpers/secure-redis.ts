/**
 * A redis-server that only speaks TLS and only lets one ACL user in, for the security tests: a
 * throwaway CA and server certificate made with openssl in a fresh temporary directory, the user's
 * password in the ACL file and in a password file (mode 0600), never on a command line.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { freePort } from './gobgpd.js';

const run = promisify(execFile);

export interface SecureRedis {
  /** rediss://127.0.0.1:PORT */
  url: string;
  port: number;
  dir: string;
  caFile: string;
  passwordFile: string;
  username: string;
  password: string;
  logFile: string;
  pid: number;
  /** What racklb's processes need in their environment to connect. */
  env: Record<string, string>;
  stop(): Promise<void>;
}

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const p of running) p.kill('SIGKILL');
});

/** A throwaway CA and a server certificate for 127.0.0.1 and localhost, valid for a day. */
export async function makeCertificates(dir: string): Promise<{ ca: string; cert: string; key: string }> {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const ca = join(dir, 'ca.pem');
  const caKey = join(dir, 'ca.key');
  const key = join(dir, 'server.key');
  const csr = join(dir, 'server.csr');
  const cert = join(dir, 'server.pem');
  const ext = join(dir, 'san.cnf');
  writeFileSync(ext, 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  await run('openssl', ['req', '-x509', ...ec, '-keyout', caKey, '-out', ca, '-days', '1', '-subj', '/CN=racklb test CA']);
  await run('openssl', ['req', ...ec, '-keyout', key, '-out', csr, '-subj', '/CN=localhost']);
  await run('openssl', ['x509', '-req', '-in', csr, '-CA', ca, '-CAkey', caKey, '-CAcreateserial', '-out', cert, '-days', '1', '-extfile', ext]);
  return { ca, cert, key };
}

export async function startSecureRedis(opts: { username?: string } = {}): Promise<SecureRedis> {
  const dir = mkdtempSync(join(tmpdir(), 'racklb-secure-redis-'));
  const username = opts.username ?? 'racklb';
  // Hex, so it can sit in an ACL file unquoted; long and random, so a grep for it cannot hit by chance.
  const password = `pw-${randomBytes(16).toString('hex')}`;
  const { ca, cert, key } = await makeCertificates(dir);
  const passwordFile = join(dir, 'redis-password');
  writeFileSync(passwordFile, `${password}\n`, { mode: 0o600 });
  // Least privilege: racklb's keys only (all carry the hash tag), no admin or dangerous commands
  // except the two a client library needs on connect.
  writeFileSync(join(dir, 'users.acl'), `user default off\nuser ${username} on >${password} ~{racklb}:* &* +@all -@admin -@dangerous +info +client|setname\n`, { mode: 0o600 });
  const port = await freePort();
  const logFile = join(dir, 'redis.log');
  const args = [
    '--port', '0', '--tls-port', String(port), '--bind', '127.0.0.1',
    '--tls-cert-file', cert, '--tls-key-file', key, '--tls-ca-cert-file', ca, '--tls-auth-clients', 'no',
    '--aclfile', join(dir, 'users.acl'), '--dir', dir, '--save', '', '--appendonly', 'no', '--logfile', logFile, '--daemonize', 'no',
  ];
  const proc = spawn('redis-server', args, { stdio: 'ignore' });
  running.add(proc);
  proc.once('exit', () => running.delete(proc));
  const env = { RACKLB_REDIS_USERNAME: username, RACKLB_REDIS_PASSWORD_FILE: passwordFile, RACKLB_REDIS_CA_FILE: ca };
  const url = `rediss://127.0.0.1:${port}`;
  // Ready once an authenticated TLS PING answers.
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`redis-server exited with code ${proc.exitCode}; see ${logFile}`);
    const probe = new Redis({ host: '127.0.0.1', port, username, password, tls: { ca: readFileSync(ca) }, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    probe.on('error', () => undefined);
    const ok = await probe.connect().then(() => probe.ping()).then(() => true, () => false);
    probe.disconnect();
    if (ok) break;
    if (Date.now() > deadline) throw new Error(`redis-server with TLS on ${port} did not answer within 10 s`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url,
    port,
    dir,
    caFile: ca,
    passwordFile,
    username,
    password,
    logFile,
    pid: proc.pid!,
    env,
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        const exited = new Promise((r) => proc.once('exit', r));
        proc.kill('SIGKILL');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
