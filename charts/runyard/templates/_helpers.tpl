{{/* The chart's name. */}}
{{- define "runyard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The full name of the release's objects (at most 56 characters: "-worker" fits after it). */}}
{{- define "runyard.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 56 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 56 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 56 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "runyard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "runyard.labels" -}}
helm.sh/chart: {{ include "runyard.chart" . }}
{{ include "runyard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "runyard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "runyard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "runyard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "runyard.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "runyard.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "runyard.secretName" -}}
{{- default (include "runyard.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "runyard.publicUrl" -}}
{{- default (printf "http://%s.%s.svc:%v" (include "runyard.fullname" .) .Release.Namespace .Values.service.port) .Values.publicUrl | trimSuffix "/" -}}
{{- end -}}

{{- define "runyard.useRedis" -}}
{{- if or .Values.redis.url .Values.redis.existingSecret -}}true{{- end -}}
{{- end -}}

{{/* The namespace of the Jobs of kube runners that name none: never the release's own. */}}
{{- define "runyard.jobsNamespace" -}}
{{- default (printf "%s-jobs" (default "default" .Release.Namespace)) .Values.jobs.namespace | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The namespaces of the kube runners, as a JSON list. */}}
{{- define "runyard.kubeNamespaces" -}}
{{- $nss := list -}}
{{- range .Values.runners -}}
{{- if eq (toString .kind) "kube" -}}
{{- $nss = append $nss (default (include "runyard.jobsNamespace" $) .namespace) -}}
{{- end -}}
{{- end -}}
{{- toJson (uniq $nss) -}}
{{- end -}}

{{/* Milliseconds (rounded up) of a runyard duration, read as the server reads it (humantime):
one or more <number><unit> parts, the number with an optional fraction, spaces allowed ("30s",
"2m30s", "150000ms", "2.5m", "1h 30m"), or "0". Arguments: dict "v" the value "what" its name (for
the message). A form the chart cannot read is refused, never taken for 0. */}}
{{- define "runyard.millis" -}}
{{- $what := .what -}}
{{- if not (kindIs "string" .v) -}}
{{- fail (printf "runyard: %s must be a duration string such as \"30s\", \"2m30s\" or \"1.5m\", not %v" $what .v) -}}
{{- end -}}
{{- $d := .v -}}
{{- $units := dict
  "nanos" 0.000001 "nsec" 0.000001 "ns" 0.000001
  "usec" 0.001 "us" 0.001 "µs" 0.001
  "millis" 1 "msec" 1 "ms" 1
  "seconds" 1000 "second" 1000 "secs" 1000 "sec" 1000 "s" 1000
  "minutes" 60000 "minute" 60000 "min" 60000 "mins" 60000 "m" 60000
  "hours" 3600000 "hour" 3600000 "hr" 3600000 "hrs" 3600000 "h" 3600000
  "days" 86400000 "day" 86400000 "d" 86400000
  "weeks" 604800000 "week" 604800000 "wk" 604800000 "wks" 604800000 "w" 604800000
  "months" 2630016000 "month" 2630016000 "M" 2630016000
  "years" 31557600000 "year" 31557600000 "yr" 31557600000 "yrs" 31557600000 "y" 31557600000
-}}
{{- $bad := printf "runyard: %s = %q is not a duration the chart can read; write it as <number><unit> parts such as \"90s\", \"2m30s\", \"150000ms\" or \"2.5m\" (units ms, s, m, h, d)" $what $d -}}
{{- if eq $d "0" -}}0
{{- else if not (regexMatch "^\\s*([0-9]+(\\.[0-9]+)?\\s*[A-Za-zµ]+\\s*)+$" $d) -}}
{{- fail $bad -}}
{{- else -}}
{{- $total := 0.0 -}}
{{- range $part := regexFindAll "[0-9]+(\\.[0-9]+)?\\s*[A-Za-zµ]+" $d -1 -}}
{{- $unit := regexFind "[A-Za-zµ]+$" $part -}}
{{- if not (hasKey $units $unit) -}}
{{- fail $bad -}}
{{- end -}}
{{- $total = addf $total (mulf (regexFind "^[0-9]+(\\.[0-9]+)?" $part | float64) (get $units $unit)) -}}
{{- end -}}
{{- ceil $total | int64 -}}
{{- end -}}
{{- end -}}

{{/* runyard's shutdown window in milliseconds for the pods of a component: worker.shutdown_grace +
worker.kill_grace (30 s and 5 s unless set in `config.worker`, or in the component's extraEnv as
RUNYARD_WORKER__SHUTDOWN_GRACE / RUNYARD_WORKER__KILL_GRACE, which override the file as in the
server) + 10 s, what the stop may take past the graces whatever the store does (the server's
`worker::STOP_MARGIN`, docs/reliability.md "Stopping a server or a worker node"). Arguments:
dict "root" $ "component" "server"|"worker". */}}
{{- define "runyard.shutdownWindowMs" -}}
{{- $c := .component -}}
{{- $w := .root.Values.config.worker | default dict -}}
{{- $keys := dict "shutdown_grace" (dict "v" (get $w "shutdown_grace" | default "30s") "what" "config.worker.shutdown_grace") "kill_grace" (dict "v" (get $w "kill_grace" | default "5s") "what" "config.worker.kill_grace") -}}
{{- range $e := ((get .root.Values $c).extraEnv | default list) -}}
{{- $n := upper (toString (get $e "name")) -}}
{{- if eq $n "RUNYARD_WORKER" -}}
{{- fail (printf "runyard: %s.extraEnv must not set RUNYARD_WORKER (the whole [worker] table): set config.worker instead, which the chart checks against terminationGracePeriodSeconds" $c) -}}
{{- end -}}
{{- range $k := list "shutdown_grace" "kill_grace" -}}
{{- if eq $n (printf "RUNYARD_WORKER__%s" (upper $k)) -}}
{{- if not (hasKey $e "value") -}}
{{- fail (printf "runyard: %s.extraEnv %s from valueFrom cannot be checked against terminationGracePeriodSeconds; set config.worker.%s or a plain value" $c (get $e "name") $k) -}}
{{- end -}}
{{- $_ := set $keys $k (dict "v" (toString (get $e "value")) "what" (printf "%s.extraEnv %s" $c (get $e "name"))) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- add (include "runyard.millis" $keys.shutdown_grace | int64) (include "runyard.millis" $keys.kill_grace | int64) 10000 -}}
{{- end -}}

{{/* A value as TOML: strings, booleans, numbers, lists and (inline) tables. */}}
{{- define "runyard.toml" -}}
{{- $v := . -}}
{{- if kindIs "string" $v -}}
{{- toJson $v -}}
{{- else if kindIs "bool" $v -}}
{{- $v -}}
{{- else if or (kindIs "int" $v) (kindIs "int64" $v) -}}
{{- $v -}}
{{- else if kindIs "float64" $v -}}
{{- /* Helm reads a values file's numbers as 64-bit floats: a whole number past 2^53 is no longer
the one written, and past 2^63 it turned negative when made an integer. */ -}}
{{- if and (eq $v (floor $v)) (or (gt $v 9007199254740992.0) (lt $v -9007199254740992.0)) -}}
{{- fail (printf "runyard: the number %v is too large to pass exactly (Helm reads numbers as 64-bit floats: whole numbers up to 2^53 only); no runyard setting needs one so large" $v) -}}
{{- else if eq $v (floor $v) -}}{{- int64 $v -}}{{- else -}}{{- $v -}}{{- end -}}
{{- else if kindIs "slice" $v -}}
[{{- range $i, $e := $v -}}{{- if $i -}}, {{ end -}}{{- include "runyard.toml" $e -}}{{- end -}}]
{{- else if kindIs "map" $v -}}
{ {{- range $i, $k := keys $v | sortAlpha -}}{{- if $i -}},{{- end }} {{ toJson $k }} = {{ include "runyard.toml" (get $v $k) -}}{{- end }} }
{{- else -}}
{{- fail (printf "runyard: cannot write %v (%s) as TOML" $v (kindOf $v)) -}}
{{- end -}}
{{- end -}}

{{/* `config` keys the chart sets itself, or that hold a secret (which belongs in a Secret, never in
the ConfigMap), with the value to use instead; and the RUNYARD_* variables and arguments that would
set the same keys behind the chart's back. */}}
{{- define "runyard.checkConfig" -}}
{{- $instead := dict
  "listen" "server.port (the chart writes listen = 0.0.0.0:<server.port>)"
  "public_url" "publicUrl"
  "data_dir" "persistence.* (the chart mounts the data volume at /var/lib/runyard)"
  "redis" "redis.url or redis.existingSecret (the URL, which may hold a password, reaches runyard from a Secret, and the chart then drops the embedded store's claim and Recreate strategy)"
  "master_key" "secrets.masterKey or secrets.existingSecret (key master-key): a secret belongs in a Secret, never in the ConfigMap"
  "runners" "the chart's top-level runners list"
  "auth.jwt_secret" "secrets.jwtSecret or secrets.existingSecret (key jwt-secret): a secret belongs in a Secret, never in the ConfigMap"
  "auth.insecure_no_auth" "auth.enabled=false (the chart then starts serve --insecure-no-auth)"
  "worker.enabled" "worker.enabled (the chart's value: it decides which pods run the worker)"
-}}
{{- $cfg := .Values.config | default dict -}}
{{- range $k := keys $cfg | sortAlpha -}}
{{- if not (regexMatch "^[A-Za-z0-9_-]+$" $k) -}}
{{- fail (printf "runyard: config key %q is not a plain name: write nested keys as maps (config: {auth: {tokens: [...]}}), not dotted or quoted names" $k) -}}
{{- end -}}
{{- if hasKey $instead $k -}}
{{- fail (printf "runyard: config.%s is not allowed (the chart sets it or it holds a secret); use %s" $k (get $instead $k)) -}}
{{- end -}}
{{- $t := get $cfg $k -}}
{{- if kindIs "map" $t -}}
{{- range $kk := keys $t | sortAlpha -}}
{{- if not (regexMatch "^[A-Za-z0-9_-]+$" $kk) -}}
{{- fail (printf "runyard: config.%s key %q is not a plain name: write nested keys as maps, not dotted or quoted names" $k $kk) -}}
{{- end -}}
{{- $path := printf "%s.%s" $k $kk -}}
{{- if hasKey $instead $path -}}
{{- fail (printf "runyard: config.%s is not allowed (the chart sets it or it holds a secret); use %s" $path (get $instead $path)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- /* A webhook URL with credentials: the server refuses it too, and they would sit in the ConfigMap. */ -}}
{{- $notify := get $cfg "notify" -}}
{{- if kindIs "map" $notify -}}
{{- range $i, $d := (get $notify "defaults" | default list) -}}
{{- if and (kindIs "map" $d) (regexMatch "^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@" (toString (get $d "url"))) -}}
{{- fail (printf "runyard: config.notify.defaults[%d].url carries a user name or password: runyard refuses credentials in webhook URLs (they would show in the ConfigMap and on every job); verify the Runyard-Signature header instead (docs/notifications.md)" $i) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $envInstead := dict
  "RUNYARD_CONFIG" "nothing: the chart points it at its ConfigMap's runyard.toml"
  "RUNYARD_LISTEN" (get $instead "listen")
  "RUNYARD_PUBLIC_URL" (get $instead "public_url")
  "RUNYARD_DATA_DIR" (get $instead "data_dir")
  "RUNYARD_REDIS" (get $instead "redis")
  "RUNYARD_MASTER_KEY" (get $instead "master_key")
  "RUNYARD_AUTH__JWT_SECRET" (get $instead "auth.jwt_secret")
  "RUNYARD_AUTH__INSECURE_NO_AUTH" (get $instead "auth.insecure_no_auth")
  "RUNYARD_WORKER__ENABLED" (get $instead "worker.enabled")
  "RUNYARD_STORE__REDIS_CA" "redis.caSecret (the chart mounts the CA certificate and names it), or config.store.redis_ca for a CA file the image holds"
  "RUNYARD_AUTH" "config.auth for its other keys, and secrets.jwtSecret or secrets.existingSecret for its secret (the whole [auth] table in one variable would carry jwt_secret in the pod spec and could switch auth on or off behind auth.enabled)"
-}}
{{- range $c := list "server" "worker" -}}
{{- range $e := ((get $.Values $c).extraEnv | default list) -}}
{{- $n := upper (toString (get $e "name")) -}}
{{- if hasKey $envInstead $n -}}
{{- fail (printf "runyard: %s.extraEnv must not set %s (the chart sets it, from a Secret where it is one); use %s" $c (get $e "name") (get $envInstead $n)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $a := (.Values.server.extraArgs | default list) -}}
{{- if regexMatch "^--(redis|data-dir|listen)(=.*)?$" (toString $a) -}}
{{- fail (printf "runyard: server.extraArgs must not hold %s: a command line is readable by anyone who can read the pod; use redis.url or redis.existingSecret, persistence.*, server.port" (regexReplaceAll "=.*$" (toString $a) "")) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Checks of the values that templates cannot express otherwise. */}}
{{- define "runyard.checks" -}}
{{- include "runyard.checkConfig" . -}}
{{- if and .Values.worker.enabled (not (include "runyard.useRedis" .)) -}}
{{- fail "runyard: worker.enabled needs Redis (redis.url or redis.existingSecret): the embedded store belongs to one process" -}}
{{- end -}}
{{- if and (gt (int .Values.server.replicas) 1) (not (include "runyard.useRedis" .)) -}}
{{- fail "runyard: server.replicas > 1 needs Redis (redis.url or redis.existingSecret)" -}}
{{- end -}}
{{- if .Values.secrets.existingSecret -}}
{{- range $k := list "masterKey" "jwtSecret" -}}
{{- if get $.Values.secrets $k -}}
{{- fail (printf "runyard: secrets.%s and secrets.existingSecret are both set: with existingSecret the keys come from that Secret (master-key, jwt-secret) and the chart renders none; remove secrets.%s, or remove existingSecret to have the chart render the Secret" $k $k) -}}
{{- end -}}
{{- end -}}
{{- if .Values.redis.url -}}
{{- fail "runyard: redis.url next to secrets.existingSecret: the chart renders no Secret then, so it has nowhere to keep the URL (which may hold a password); put the URL in a Secret of your own and set redis.existingSecret (and redis.existingSecretKey, default redis-url), which may be the same Secret" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.redis.url .Values.redis.existingSecret -}}
{{- fail "runyard: set redis.url or redis.existingSecret, not both" -}}
{{- end -}}
{{- if and .Values.redis.existingSecret (not .Values.redis.existingSecretKey) -}}
{{- fail "runyard: redis.existingSecret needs redis.existingSecretKey (the key holding the URL; default redis-url)" -}}
{{- end -}}
{{- if .Values.redis.caSecret -}}
{{- if not (include "runyard.useRedis" .) -}}
{{- fail "runyard: redis.caSecret needs Redis over TLS (redis.url or redis.existingSecret with a rediss:// URL)" -}}
{{- end -}}
{{- if and .Values.redis.url (not (hasPrefix "rediss://" .Values.redis.url)) -}}
{{- fail "runyard: redis.caSecret is for TLS: redis.url must be a rediss:// URL" -}}
{{- end -}}
{{- if not (regexMatch "^[A-Za-z0-9._-]+$" (toString .Values.redis.caSecretKey)) -}}
{{- fail "runyard: redis.caSecret needs redis.caSecretKey, the Secret's key holding the CA certificate (a file name: letters, digits, '.', '_', '-'; default ca.crt)" -}}
{{- end -}}
{{- if hasKey ((.Values.config | default dict).store | default dict) "redis_ca" -}}
{{- fail "runyard: config.store.redis_ca next to redis.caSecret: the chart names the mounted CA as store.redis_ca; set one of them" -}}
{{- end -}}
{{- end -}}
{{- if not (or .Values.secrets.existingSecret .Values.secrets.masterKey) -}}
{{- fail "runyard: set secrets.masterKey (e.g. --set secrets.masterKey=$(openssl rand -hex 32)) or secrets.existingSecret; the chart never generates it, since a generated key changes with every render and orphans running jobs" -}}
{{- end -}}
{{- if and .Values.secrets.masterKey (lt (len .Values.secrets.masterKey) 32) -}}
{{- fail "runyard: secrets.masterKey must be at least 32 characters" -}}
{{- end -}}
{{- if and .Values.auth.enabled (not (or .Values.secrets.existingSecret .Values.secrets.jwtSecret)) -}}
{{- fail "runyard: auth.enabled needs secrets.jwtSecret (e.g. --set secrets.jwtSecret=$(openssl rand -hex 32)) or secrets.existingSecret with a jwt-secret key; or set auth.enabled=false to run without authentication" -}}
{{- end -}}
{{- if and .Values.secrets.jwtSecret (lt (len .Values.secrets.jwtSecret) 32) -}}
{{- fail "runyard: secrets.jwtSecret must be at least 32 characters" -}}
{{- end -}}
{{- $metricsOpen := false -}}
{{- $cfgAuth := (.Values.config | default dict).auth -}}
{{- if kindIs "map" $cfgAuth -}}
{{- $v := get $cfgAuth "metrics_require_token" -}}
{{- $metricsOpen = and (kindIs "bool" $v) (not $v) -}}
{{- end -}}
{{- /* RUNYARD_AUTH__METRICS_REQUIRE_TOKEN in server.extraEnv overrides the file, as in the server: only the value "false" opens /metrics; the server reads the name in any case and trims the value. */ -}}
{{- range $e := (.Values.server.extraEnv | default list) -}}
{{- if eq (upper (toString (get $e "name"))) "RUNYARD_AUTH__METRICS_REQUIRE_TOKEN" -}}
{{- $metricsOpen = eq (trim (toString (get $e "value"))) "false" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.serviceMonitor.enabled .Values.auth.enabled (not .Values.serviceMonitor.bearerTokenSecret) (not $metricsOpen) -}}
{{- fail "runyard: serviceMonitor.enabled with auth.enabled needs serviceMonitor.bearerTokenSecret (a Secret with a runyard token that has jobs:read and no types or channels): with auth, /metrics answers 401 without one; or set config.auth.metrics_require_token=false to serve /metrics to anyone" -}}
{{- end -}}
{{- range $c := list "server" "worker" -}}
{{- $window := include "runyard.shutdownWindowMs" (dict "root" $ "component" $c) | int64 -}}
{{- $grace := (get $.Values $c).terminationGracePeriodSeconds | int64 -}}
{{- if le (mul $grace 1000) $window -}}
{{- $shown := ternary (printf "%d" (div $window 1000)) (printf "%.3f" (divf $window 1000)) (eq (mod $window 1000) 0) -}}
{{- fail (printf "runyard: %s.terminationGracePeriodSeconds (%d) must be longer than runyard's shutdown window, worker.shutdown_grace + worker.kill_grace + 10 s (%s s): raise %s.terminationGracePeriodSeconds or lower the graces" $c $grace $shown $c) -}}
{{- end -}}
{{- end -}}
{{- if and (eq (include "runyard.jobsNamespace" .) .Release.Namespace) -}}
{{- fail "runyard: jobs.namespace must not be the release namespace: a Job there could mount runyard's own Secret" -}}
{{- end -}}
{{- if not .Values.runners -}}
{{- if .Values.worker.enabled -}}
{{- fail "runyard: runners is empty: `runyard worker` refuses to start without runners; give at least one runner (see values.yaml)" -}}
{{- else if not (has "--allow-no-runners" (.Values.server.extraArgs | default list)) -}}
{{- fail "runyard: runners is empty: `runyard serve` refuses to start without runners (every job would be refused); give at least one runner, or add --allow-no-runners to server.extraArgs to start anyway" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.ingress.enabled (not .Values.ingress.hosts) -}}
{{- fail "runyard: ingress.enabled needs at least one entry in ingress.hosts, e.g. --set 'ingress.hosts[0].host=jobs.example.com' (an Ingress without rules is refused by the API server)" -}}
{{- end -}}
{{- $pod := .Values.podSecurityContext | default dict -}}
{{- $ctr := .Values.securityContext | default dict -}}
{{- $user := ternary (get $ctr "runAsUser") (get $pod "runAsUser") (hasKey $ctr "runAsUser") -}}
{{- $userFrom := ternary "securityContext.runAsUser" "podSecurityContext.runAsUser" (hasKey $ctr "runAsUser") -}}
{{- $nonRoot := ternary (get $ctr "runAsNonRoot") (get $pod "runAsNonRoot") (hasKey $ctr "runAsNonRoot") -}}
{{- if and (kindIs "bool" $nonRoot) $nonRoot (not (kindIs "invalid" $user)) (eq (toString $user) "0") -}}
{{- fail (printf "runyard: %s is 0 (root) while runAsNonRoot is true: the kubelet would refuse to start the container; runyard needs no root, use the image's user (10001) or another non-zero UID" $userFrom) -}}
{{- end -}}
{{- range $i, $r := .Values.runners -}}
{{- if and (eq (toString $r.kind) "kube") (eq (toString $r.namespace) $.Release.Namespace) -}}
{{- fail (printf "runyard: runners[%d].namespace is the release namespace, where runyard's Secret is; give kube runners a namespace of their own" $i) -}}
{{- end -}}
{{- if not $r.kind -}}
{{- fail (printf "runyard: runners[%d] needs a kind" $i) -}}
{{- end -}}
{{- if not $r.types -}}
{{- fail (printf "runyard: runners[%d] needs types" $i) -}}
{{- end -}}
{{- end -}}
{{- end -}}
