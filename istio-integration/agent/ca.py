"""A small mesh CA (istiod's role for workload certificates), with python3-cryptography.

One MeshCA = one trust root (EC P-256, O=<trust domain>). issue(ns, sa) returns a fresh key
and a leaf certificate whose only SAN is the URI spiffe://<trust domain>/ns/<ns>/sa/<sa>, as
istiod's CA signs them (digitalSignature+keyEncipherment, serverAuth+clientAuth, short life).
Thread-safe; share one MeshCA between all the agents of a mesh.
"""
import datetime
import threading

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class MeshCA:
    def __init__(self, trust_domain="cluster.local", cert_ttl=datetime.timedelta(hours=24)):
        self.trust_domain = trust_domain
        self.cert_ttl = cert_ttl
        self._lock = threading.Lock()
        self._serial = 1
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain)])
        self.cert = (x509.CertificateBuilder()
                     .subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key())
                     .serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(minutes=5))
                     .not_valid_after(now + datetime.timedelta(days=10))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                     .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                                  False, False), True)
                     .add_extension(x509.SubjectKeyIdentifier.from_public_key(
                         self.key.public_key()), False)
                     .sign(self.key, hashes.SHA256()))
        self.root_pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def spiffe(self, namespace, service_account):
        return "spiffe://%s/ns/%s/sa/%s" % (self.trust_domain, namespace, service_account)

    def issue(self, namespace, service_account, ttl=None):
        """(cert_chain_pem, key_pem) for the workload identity; each call makes a new key and
        serial (rotation)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        with self._lock:
            self._serial += 1
            serial = (x509.random_serial_number() >> 16 << 16) | (self._serial & 0xffff)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([]))
                .issuer_name(self.cert.subject)
                .public_key(key.public_key())
                .serial_number(serial)
                .not_valid_before(now - datetime.timedelta(minutes=1))
                .not_valid_after(now + (ttl or self.cert_ttl))
                .add_extension(x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(self.spiffe(namespace, service_account))]),
                    True)
                .add_extension(x509.KeyUsage(True, False, True, False, False, False, False,
                                             False, False), True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self.key.public_key()), False)
                .sign(self.key, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)

    def write_root(self, path):
        with open(path, "wb") as f:
            f.write(self.root_pem)
        return path


def cert_serial(pem):
    """Serial number (hex, lower case) of the first certificate of a PEM chain."""
    return "%x" % x509.load_pem_x509_certificate(pem).serial_number
