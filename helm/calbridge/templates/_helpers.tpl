{{/* The chart's name. */}}
{{- define "calbridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's base name; every object's name starts with it. Kept short
enough that "-adapter-sandbox" and a StatefulSet pod's suffix still fit. */}}
{{- define "calbridge.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "calbridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "scheduler"). */}}
{{- define "calbridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "calbridge.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* All labels of one component's objects. */}}
{{- define "calbridge.labels" -}}
{{ include "calbridge.selectorLabels" . }}
app.kubernetes.io/part-of: calbridge
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ include "calbridge.chart" .root }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "calbridge.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{- define "calbridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "calbridge.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "calbridge.scheduler.name" -}}
{{- printf "%s-scheduler" (include "calbridge.fullname" .) -}}
{{- end -}}

{{/* An adapter's object name: (dict "root" $ "adapter" "caldav"). */}}
{{- define "calbridge.adapter.name" -}}
{{- printf "%s-adapter-%s" (include "calbridge.fullname" .root) .adapter -}}
{{- end -}}

{{/* The gRPC URL the scheduler calls an adapter at. */}}
{{- define "calbridge.adapter.url" -}}
{{- $a := index .root.Values.adapters .adapter -}}
{{- printf "%s://%s.%s.svc:%d" (include "calbridge.scheme" .root) (include "calbridge.adapter.name" .) .root.Release.Namespace (int $a.port) -}}
{{- end -}}

{{/* The scheme of the gRPC links: https with tls.enabled. */}}
{{- define "calbridge.scheme" -}}
{{- if .Values.tls.enabled -}}https{{- else -}}http{{- end -}}
{{- end -}}

{{/* The Secret (kubernetes.io/tls with ca.crt) of an adapter's link
certificate: (dict "root" $ "adapter" "caldav"). */}}
{{- define "calbridge.adapter.tlsSecret" -}}
{{- $named := index .root.Values.tls.adapterSecrets .adapter | default "" -}}
{{- $named | default (printf "%s-tls" (include "calbridge.adapter.name" .)) -}}
{{- end -}}

{{/* The Secret of the scheduler's certificate. */}}
{{- define "calbridge.scheduler.tlsSecret" -}}
{{- .Values.tls.schedulerSecret | default (printf "%s-tls" (include "calbridge.scheduler.name" .)) -}}
{{- end -}}

{{/* The port kubelet's gRPC probes use: the plaintext health listener
beside a TLS gRPC port (probes cannot speak TLS), else the gRPC port. */}}
{{- define "calbridge.probePort" -}}
{{- if .root.Values.tls.enabled -}}{{ .root.Values.tls.healthPort }}{{- else -}}{{ .port }}{{- end -}}
{{- end -}}

{{/* The link certificate's files, from a Secret mounted at /etc/calbridge/tls. */}}
{{- define "calbridge.tlsVolume" -}}
- name: links-tls
  secret:
    secretName: {{ . }}
    defaultMode: 0440
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
      - key: ca.crt
        path: ca.crt
{{- end -}}

{{/* Where adapters deliver push notifications: the scheduler pod's stable
name through its headless Service. */}}
{{- define "calbridge.scheduler.advertiseUrl" -}}
{{- if .Values.scheduler.advertiseUrl -}}
{{- .Values.scheduler.advertiseUrl -}}
{{- else -}}
{{- $n := include "calbridge.scheduler.name" . -}}
{{- printf "%s://%s-0.%s.%s.svc:%d" (include "calbridge.scheme" .) $n $n .Release.Namespace (int .Values.scheduler.port) -}}
{{- end -}}
{{- end -}}

{{/* Whether an adapter pushes to the scheduler (and so may call it): the
sandbox always, an adapter with a webhook (Google, Microsoft) when it is on. */}}
{{- define "calbridge.adapter.pushes" -}}
{{- $a := index .root.Values.adapters .adapter -}}
{{- if eq .adapter "sandbox" -}}true
{{- else if and (hasKey $a "webhook") $a.webhook.enabled -}}true
{{- end -}}
{{- end -}}

{{/* The Secret the chart makes for the scheduler, when it makes one. */}}
{{- define "calbridge.scheduler.secretName" -}}
{{- printf "%s-keys" (include "calbridge.scheduler.name" .) -}}
{{- end -}}

{{/* The adapters, in a fixed order. */}}
{{- define "calbridge.adapterKeys" -}}
sandbox caldav google microsoft
{{- end -}}

{{/* Public (non-private) destinations for provider egress, IPv4 and IPv6. */}}
{{- define "calbridge.publicPeers" -}}
- ipBlock:
    cidr: 0.0.0.0/0
    except:
      - 10.0.0.0/8
      - 100.64.0.0/10
      - 127.0.0.0/8
      - 169.254.0.0/16
      - 172.16.0.0/12
      - 192.168.0.0/16
- ipBlock:
    cidr: ::/0
    except:
      - fc00::/7
      - fe80::/10
      - ::1/128
{{- end -}}

{{/* The egress rules every calbridge pod has: DNS, and OTLP when on. */}}
{{- define "calbridge.commonEgress" -}}
- to:
    {{- toYaml .Values.networkPolicy.dns | nindent 4 }}
  ports:
    - protocol: UDP
      port: 53
    - protocol: TCP
      port: 53
{{- if .Values.otlp.endpoint }}
- ports:
    - protocol: TCP
      port: {{ .Values.networkPolicy.otlp.port }}
  {{- with .Values.networkPolicy.otlp.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* The metrics ingress rule, when metrics are on. */}}
{{- define "calbridge.metricsIngress" -}}
{{- if .Values.metrics.enabled }}
- ports:
    - protocol: TCP
      port: {{ .Values.metrics.port }}
  {{- with .Values.networkPolicy.metricsFrom }}
  from:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* Environment every process gets. */}}
{{- define "calbridge.commonEnv" -}}
- name: RUST_LOG
  value: {{ .Values.logLevel | quote }}
{{- if .Values.otlp.endpoint }}
- name: CALBRIDGE_OTLP_ENDPOINT
  value: {{ .Values.otlp.endpoint | quote }}
{{- end }}
{{- if .Values.metrics.enabled }}
- name: CALBRIDGE_METRICS_LISTEN
  value: "0.0.0.0:{{ .Values.metrics.port }}"
{{- end }}
{{- end -}}

{{/* gRPC probes on grpc.health.v1: (dict "port" 50051 "service" "calbridge.v1.Scheduler"). */}}
{{- define "calbridge.probes" -}}
startupProbe:
  grpc:
    port: {{ .port }}
  periodSeconds: 2
  failureThreshold: {{ .startupFailures | default 30 }}
livenessProbe:
  grpc:
    port: {{ .port }}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  grpc:
    port: {{ .port }}
    service: {{ .service }}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
{{- end -}}
