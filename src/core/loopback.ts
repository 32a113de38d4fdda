/**
 * 127.0.0.0/8, ::1 and localhost: the only hosts that may be reached over plain http. Takes a
 * hostname as URL.hostname gives it (IPv6 in brackets) or bare.
 */
export function isLoopbackHost(hostname: string): boolean {
  const h = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127(?:\.\d{1,3}){3}$/.test(h);
}
