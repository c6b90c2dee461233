
Éf
I
ISTIO_PROXY_SHA64istio-proxy:436f365a8007cd8a13a9f1321e7cce94bcc8883e

ISTIO_VERSION1.10.0Bò
ç


build.type	RELEASE
:
revision.sha*(436f365a8007cd8a13a9f1321e7cce94bcc8883e

revision.statusClean

ssl.version	BoringSSL