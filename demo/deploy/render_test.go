package deploy

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/yaml"
)

// kubectl returns the kubectl the world scripts build, or the one on PATH.
func kubectl(t *testing.T) string {
	t.Helper()
	if out, err := exec.Command("../../world/build.sh", "--dir", "k8s").Output(); err == nil {
		k := filepath.Join(strings.TrimSpace(string(out)), "kubectl")
		if _, err := os.Stat(k); err == nil {
			return k
		}
	}
	k, err := exec.LookPath("kubectl")
	if err != nil {
		t.Fatal("no kubectl: run world/build.sh k8s")
	}
	return k
}

// objects is a rendered kustomization by kind and name.
type objects map[string]map[string][]byte

func render(t *testing.T, dir string) objects {
	t.Helper()
	out, err := exec.Command(kubectl(t), "kustomize", dir).Output()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v", dir, err)
	}
	objs := objects{}
	for _, doc := range bytes.Split(out, []byte("\n---\n")) {
		var meta struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		j, err := yaml.YAMLToJSON(doc)
		if err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		if err := json.Unmarshal(j, &meta); err != nil {
			t.Fatal(err)
		}
		if meta.Kind != "Namespace" && meta.Metadata.Namespace != "oauth2-demo" {
			t.Errorf("%s %s is in namespace %q, want oauth2-demo", meta.Kind, meta.Metadata.Name, meta.Metadata.Namespace)
		}
		if objs[meta.Kind] == nil {
			objs[meta.Kind] = map[string][]byte{}
		}
		objs[meta.Kind][meta.Metadata.Name] = j
	}
	return objs
}

func get[T any](t *testing.T, objs objects, kind, name string) *T {
	t.Helper()
	j, ok := objs[kind][name]
	if !ok {
		t.Fatalf("no %s %s", kind, name)
	}
	v := new(T)
	if err := json.Unmarshal(j, v); err != nil {
		t.Fatal(err)
	}
	return v
}

func container(t *testing.T, spec corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range spec.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %s", name)
	return corev1.Container{}
}

// checkHardened checks every container of every workload: non-root, no
// privilege escalation, no capabilities, RuntimeDefault seccomp, requests.
func checkHardened(t *testing.T, objs objects, writable ...string) {
	t.Helper()
	type workload struct {
		spec corev1.PodSpec
		// bridged: gefyra bridges it, and carrier, swapped into it,
		// authenticates at the control plane with the Pod's token.
		bridged bool
	}
	var specs []workload
	for name := range objs["Deployment"] {
		specs = append(specs, workload{get[appsv1.Deployment](t, objs, "Deployment", name).Spec.Template.Spec, name == "oauth2-demo"})
	}
	for name := range objs["StatefulSet"] {
		specs = append(specs, workload{get[appsv1.StatefulSet](t, objs, "StatefulSet", name).Spec.Template.Spec, false})
	}
	for _, w := range specs {
		spec := w.spec
		for _, c := range spec.Containers {
			sc := c.SecurityContext
			switch {
			case sc == nil:
				t.Errorf("%s: no securityContext", c.Name)
				continue
			case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot:
				t.Errorf("%s: runAsNonRoot not set", c.Name)
			case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
				t.Errorf("%s: privilege escalation allowed", c.Name)
			case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
				t.Errorf("%s: capabilities not dropped", c.Name)
			case sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
				t.Errorf("%s: seccomp profile not RuntimeDefault", c.Name)
			case !slices.Contains(writable, c.Name) && (sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem):
				t.Errorf("%s: root file system writable", c.Name)
			case c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero():
				t.Errorf("%s: no resource requests", c.Name)
			case c.ReadinessProbe == nil || c.LivenessProbe == nil:
				t.Errorf("%s: probes missing", c.Name)
			case strings.HasSuffix(c.Image, ":latest") || !strings.Contains(c.Image, ":"):
				t.Errorf("%s: image %q has no pinned tag", c.Name, c.Image)
			}
		}
		automount := spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken
		switch {
		case w.bridged && !automount:
			t.Errorf("pod with %s has no service account token: carrier could not authenticate when bridged", spec.Containers[0].Name)
		case !w.bridged && automount:
			t.Errorf("pod with %s mounts a service account token it does not need", spec.Containers[0].Name)
		}
	}
}

// checkWorkload checks the tutorial's shape of the backend and its sidecar.
func checkWorkload(t *testing.T, objs objects) *corev1.ConfigMap {
	t.Helper()
	d := get[appsv1.Deployment](t, objs, "Deployment", "oauth2-demo")
	spec := d.Spec.Template.Spec
	if len(spec.Containers) != 2 {
		t.Fatalf("%d containers, want the proxy and the app", len(spec.Containers))
	}
	proxy := container(t, spec, "oauth2-proxy")
	if len(proxy.Ports) != 1 || proxy.Ports[0].ContainerPort != 8809 || proxy.Ports[0].Name != "http" {
		t.Errorf("oauth2-proxy ports %+v, want 8809 named http", proxy.Ports)
	}
	if !slices.Contains(proxy.Args, "--pass-access-token=true") {
		t.Errorf("oauth2-proxy args %v lack --pass-access-token", proxy.Args)
	}
	if len(proxy.EnvFrom) == 0 || proxy.EnvFrom[0].ConfigMapRef == nil || proxy.EnvFrom[0].ConfigMapRef.Name != "oauth2-oauth2proxy" {
		t.Errorf("oauth2-proxy envFrom %+v, want ConfigMap oauth2-oauth2proxy", proxy.EnvFrom)
	}
	app := container(t, spec, "oauth2-demo-app")
	if len(app.Ports) != 1 || app.Ports[0].ContainerPort != 8155 || app.Ports[0].Name != "http-intern" {
		t.Errorf("app ports %+v, want 8155 named http-intern", app.Ports)
	}
	if app.ReadinessProbe.HTTPGet == nil || app.ReadinessProbe.HTTPGet.Port.String() != "http-intern" {
		t.Errorf("app readiness probe %+v", app.ReadinessProbe)
	}
	svc := get[corev1.Service](t, objs, "Service", "oauth2-demo")
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 8080 || svc.Spec.Ports[0].TargetPort.String() != "http" {
		t.Errorf("service ports %+v, want 8080 → http", svc.Spec.Ports)
	}
	for k, v := range svc.Spec.Selector {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("service selector %s=%s does not select the pods", k, v)
		}
	}
	ing := get[networkingv1.Ingress](t, objs, "Ingress", "oauth2-demo")
	if ing.Spec.Rules[0].Host != "oauth2-demo.127.0.0.1.nip.io" {
		t.Errorf("ingress host %q", ing.Spec.Rules[0].Host)
	}
	cm := get[corev1.ConfigMap](t, objs, "ConfigMap", "oauth2-oauth2proxy")
	want := map[string]string{
		"OAUTH2_PROXY_UPSTREAMS":     "http://127.0.0.1:8155",
		"OAUTH2_PROXY_HTTP_ADDRESS":  "0.0.0.0:8809",
		"OAUTH2_PROXY_EMAIL_DOMAINS": "*",
		"OAUTH2_PROXY_COOKIE_SECURE": "false",
	}
	for k, v := range want {
		if cm.Data[k] != v {
			t.Errorf("ConfigMap %s = %q, want %q", k, cm.Data[k], v)
		}
	}
	sec := get[corev1.Secret](t, objs, "Secret", "oauth2-oauth2proxy")
	if n := len(sec.StringData["OAUTH2_PROXY_COOKIE_SECRET"]); n != 16 && n != 24 && n != 32 {
		t.Errorf("cookie secret is %d bytes; oauth2-proxy wants 16, 24 or 32", n)
	}
	return cm
}

func TestBase(t *testing.T) {
	objs := render(t, "base")
	checkHardened(t, objs, "keycloak")
	cm := checkWorkload(t, objs)
	if cm.Data["OAUTH2_PROXY_OIDC_ISSUER_URL"] != "http://keycloak.127.0.0.1.nip.io:8080/realms/gefyra" {
		t.Errorf("issuer %q is not the realm's", cm.Data["OAUTH2_PROXY_OIDC_ISSUER_URL"])
	}
	get[appsv1.StatefulSet](t, objs, "StatefulSet", "keycloak")
	get[networkingv1.Ingress](t, objs, "Ingress", "keycloak")
	realmCM := get[corev1.ConfigMap](t, objs, "ConfigMap", "keycloak-realm")
	var realm struct {
		Realm   string `json:"realm"`
		Clients []struct {
			ClientID        string   `json:"clientId"`
			Secret          string   `json:"secret"`
			RedirectURIs    []string `json:"redirectUris"`
			ProtocolMappers []struct {
				Config map[string]string `json:"config"`
			} `json:"protocolMappers"`
		} `json:"clients"`
		Users []struct {
			Username    string `json:"username"`
			Email       string `json:"email"`
			Credentials []struct {
				Value string `json:"value"`
			} `json:"credentials"`
		} `json:"users"`
	}
	if err := json.Unmarshal([]byte(realmCM.Data["realm-gefyra.json"]), &realm); err != nil {
		t.Fatalf("realm: %v", err)
	}
	sec := get[corev1.Secret](t, objs, "Secret", "oauth2-oauth2proxy")
	if len(realm.Clients) != 1 || realm.Clients[0].ClientID != cm.Data["OAUTH2_PROXY_CLIENT_ID"] || realm.Clients[0].Secret != sec.StringData["OAUTH2_PROXY_CLIENT_SECRET"] {
		t.Fatalf("realm client does not match the proxy's: %+v", realm.Clients)
	}
	if !slices.Contains(realm.Clients[0].RedirectURIs, cm.Data["OAUTH2_PROXY_REDIRECT_URL"]) {
		t.Errorf("proxy redirect URL %q not allowed by the realm", cm.Data["OAUTH2_PROXY_REDIRECT_URL"])
	}
	emailInAccessToken := false
	for _, m := range realm.Clients[0].ProtocolMappers {
		emailInAccessToken = emailInAccessToken || (m.Config["claim.name"] == "email" && m.Config["access.token.claim"] == "true")
	}
	if !emailInAccessToken {
		t.Error("no protocol mapper puts the lowercase email claim into access tokens")
	}
	if len(realm.Users) != 1 || realm.Users[0].Username != "john@gefyra.dev" || realm.Users[0].Credentials[0].Value != "john@gefyra.dev" {
		t.Errorf("realm users %+v", realm.Users)
	}
}

func TestLocal(t *testing.T) {
	objs := render(t, "local")
	checkHardened(t, objs)
	cm := checkWorkload(t, objs)
	for _, kind := range []string{"StatefulSet", "Ingress", "ConfigMap", "Service"} {
		for name := range objs[kind] {
			if strings.Contains(name, "keycloak") {
				t.Errorf("%s %s left in the local variant", kind, name)
			}
		}
	}
	for name := range objs["Deployment"] {
		for _, c := range get[appsv1.Deployment](t, objs, "Deployment", name).Spec.Template.Spec.Containers {
			if !strings.HasPrefix(c.Image, "gefyra.dev/") || c.ImagePullPolicy != corev1.PullNever {
				t.Errorf("%s/%s: image %s pull %s, want a local gefyra.dev image never pulled", name, c.Name, c.Image, c.ImagePullPolicy)
			}
		}
	}
	if img := container(t, get[appsv1.Deployment](t, objs, "Deployment", "oauth2-demo").Spec.Template.Spec, "oauth2-proxy").Image; img != "gefyra.dev/oauth2-proxy:v7.15.6" {
		t.Errorf("proxy image %s", img)
	}
	oidcSvc := get[corev1.Service](t, objs, "Service", "oidc")
	appSvc := get[corev1.Service](t, objs, "Service", "oauth2-demo")
	if oidcSvc.Spec.ClusterIP != "10.96.100.10" || appSvc.Spec.ClusterIP != "10.96.100.20" {
		t.Errorf("clusterIPs %s and %s, want 10.96.100.10 and 10.96.100.20", oidcSvc.Spec.ClusterIP, appSvc.Spec.ClusterIP)
	}
	oidc := container(t, get[appsv1.Deployment](t, objs, "Deployment", "oidc").Spec.Template.Spec, "oidc")
	env := map[string]corev1.EnvVar{}
	for _, e := range oidc.Env {
		env[e.Name] = e
	}
	issuer := "http://" + oidcSvc.Spec.ClusterIP + ":8080"
	if env["OIDC_ISSUER"].Value != issuer || cm.Data["OAUTH2_PROXY_OIDC_ISSUER_URL"] != issuer || cm.Data["OAUTH2_PROXY_PROVIDER"] != "oidc" {
		t.Errorf("issuer: provider says %q, proxy %q (%s), want %s", env["OIDC_ISSUER"].Value, cm.Data["OAUTH2_PROXY_OIDC_ISSUER_URL"], cm.Data["OAUTH2_PROXY_PROVIDER"], issuer)
	}
	redirect := "http://" + appSvc.Spec.ClusterIP + ":8080/oauth2/callback"
	if cm.Data["OAUTH2_PROXY_REDIRECT_URL"] != redirect || !slices.Contains(strings.Split(env["OIDC_REDIRECT_URIS"].Value, ","), redirect) {
		t.Errorf("redirect URL %q not the provider's %q", cm.Data["OAUTH2_PROXY_REDIRECT_URL"], env["OIDC_REDIRECT_URIS"].Value)
	}
	if env["OIDC_CLIENT_ID"].Value != cm.Data["OAUTH2_PROXY_CLIENT_ID"] {
		t.Errorf("client ids differ")
	}
	if ref := env["OIDC_CLIENT_SECRET"].ValueFrom; ref == nil || ref.SecretKeyRef == nil || ref.SecretKeyRef.Name != "oauth2-oauth2proxy" || ref.SecretKeyRef.Key != "OAUTH2_PROXY_CLIENT_SECRET" {
		t.Errorf("provider does not share the proxy's client secret: %+v", env["OIDC_CLIENT_SECRET"])
	}
}
