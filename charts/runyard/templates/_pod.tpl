{{/*
The pod template of the server and worker Deployments.
Arguments: dict "root" $ "component" "server"|"worker" "v" (.Values.server|.Values.worker) "args" (list ...)
*/}}
{{- define "runyard.podTemplate" -}}
{{- $root := .root -}}
{{- $v := .v -}}
{{- $port := ternary "http" "health" (eq .component "server") -}}
metadata:
  labels:
    {{- include "runyard.selectorLabels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
    {{- with $v.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    # A config or secret change rolls the pods (a change in secrets.existingSecret or
    # redis.existingSecret, which the chart does not render, needs `kubectl rollout restart`).
    checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
    {{- if not $root.Values.secrets.existingSecret }}
    checksum/secret: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum }}
    {{- end }}
    {{- with $v.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
  serviceAccountName: {{ include "runyard.serviceAccountName" $root }}
  automountServiceAccountToken: true
  # Service links would put RUNYARD_SERVICE_HOST and friends in the environment, and every
  # RUNYARD_* variable is read as a configuration key.
  enableServiceLinks: false
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  containers:
    - name: runyard
      image: {{ include "runyard.image" $root | quote }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      args:
        {{- toYaml .args | nindent 8 }}
      ports:
        {{- if eq .component "server" }}
        - name: http
          containerPort: {{ $root.Values.server.port }}
          protocol: TCP
        {{- else }}
        - name: health
          containerPort: {{ $root.Values.worker.healthPort }}
          protocol: TCP
        {{- end }}
      env:
        - name: RUNYARD_CONFIG
          value: /etc/runyard/runyard.toml
        - name: RUNYARD_MASTER_KEY
          valueFrom:
            secretKeyRef:
              name: {{ include "runyard.secretName" $root }}
              key: master-key
        {{- if $root.Values.auth.enabled }}
        - name: RUNYARD_AUTH__JWT_SECRET
          valueFrom:
            secretKeyRef:
              name: {{ include "runyard.secretName" $root }}
              key: jwt-secret
        {{- end }}
        {{- if $root.Values.redis.existingSecret }}
        - name: RUNYARD_REDIS
          valueFrom:
            secretKeyRef:
              name: {{ $root.Values.redis.existingSecret }}
              key: {{ $root.Values.redis.existingSecretKey }}
        {{- else if $root.Values.redis.url }}
        - name: RUNYARD_REDIS
          valueFrom:
            secretKeyRef:
              name: {{ include "runyard.secretName" $root }}
              key: redis-url
        {{- end }}
        {{- if $root.Values.redis.caSecret }}
        - name: RUNYARD_STORE__REDIS_CA
          value: {{ printf "/etc/runyard/redis-ca/%s" $root.Values.redis.caSecretKey | quote }}
        {{- end }}
        {{- with $v.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      # Liveness asks the process only (a Redis outage must not restart every pod); readiness
      # asks the store too (a pod that cannot reach it takes no traffic).
      startupProbe:
        httpGet:
          path: /health/live
          port: {{ $port }}
        periodSeconds: 2
        failureThreshold: 30
      livenessProbe:
        httpGet:
          path: /health/live
          port: {{ $port }}
        periodSeconds: 10
        timeoutSeconds: 5
        failureThreshold: 3
      readinessProbe:
        httpGet:
          path: /health/ready
          port: {{ $port }}
        periodSeconds: 5
        timeoutSeconds: 3
        failureThreshold: 2
      resources:
        {{- toYaml $v.resources | nindent 8 }}
      securityContext:
        {{- toYaml $root.Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /etc/runyard/runyard.toml
          subPath: runyard.toml
          readOnly: true
        - name: data
          mountPath: /var/lib/runyard
        - name: tmp
          mountPath: /tmp
        {{- if $root.Values.redis.caSecret }}
        - name: redis-ca
          mountPath: /etc/runyard/redis-ca
          readOnly: true
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "runyard.fullname" $root }}
    - name: data
      {{- if and (eq .component "server") $root.Values.persistence.enabled (not (include "runyard.useRedis" $root)) }}
      persistentVolumeClaim:
        claimName: {{ default (printf "%s-data" (include "runyard.fullname" $root)) $root.Values.persistence.existingClaim }}
      {{- else }}
      emptyDir: {}
      {{- end }}
    - name: tmp
      emptyDir: {}
    {{- if $root.Values.redis.caSecret }}
    - name: redis-ca
      secret:
        secretName: {{ $root.Values.redis.caSecret }}
        items:
          - key: {{ $root.Values.redis.caSecretKey }}
            path: {{ $root.Values.redis.caSecretKey }}
    {{- end }}
  {{- with $v.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
