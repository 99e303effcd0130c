package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferrymq/ferry/core/security"
)

// EnvAdmin gives `ferry user` and `ferry acl` the node's admin listener
// when --admin is not set.
const EnvAdmin = "FERRY_ADMIN"

// adminFlags are the flags of the commands that administer a running
// node's users and ACLs through its admin listener.
type adminFlags struct {
	addr    string
	tls     tlsFlags
	timeout time.Duration
}

func (f *adminFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.addr, "admin", os.Getenv(EnvAdmin), "the node's admin listener host:port (admin.listen; default $"+EnvAdmin+")")
	cmd.Flags().DurationVar(&f.timeout, "timeout", 30*time.Second, "how long to wait for the node's answer")
	f.tls.add(cmd.Flags())
}

// call sends one request to the users API and decodes a 200 answer into
// out (when not nil); any other answer is an error with the node's reason.
func (f *adminFlags) call(ctx context.Context, method, path string, body, out any) error {
	if f.addr == "" {
		return &exitError{code: 2, msg: "--admin (or $" + EnvAdmin + ") must name the node's admin listener"}
	}
	// Without --user, a client certificate (mutual TLS) is the
	// credential: the node takes the user it names.
	byCert := f.tls.user == "" && f.tls.cert != ""
	if f.tls.user == "" && !byCert {
		return &exitError{code: 2, msg: "--user (or $" + EnvUser + ") must name a super user of the node, or --tls-cert and --tls-key give a client certificate naming one (mutual TLS)"}
	}
	var password string
	if !byCert {
		var err error
		if password, err = f.tls.password(); err != nil {
			return err
		}
	}
	scheme := "http"
	hc := &http.Client{}
	if f.tls.on || f.tls.ca != "" || f.tls.cert != "" || f.tls.key != "" {
		conf, err := security.ClientTLS{CAFile: f.tls.ca, CertFile: f.tls.cert, KeyFile: f.tls.key}.Config()
		if err != nil {
			return &exitError{code: 2, msg: err.Error()}
		}
		scheme = "https"
		hc.Transport = &http.Transport{TLSClientConfig: conf}
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, scheme+"://"+f.addr+path, rd)
	if err != nil {
		return &exitError{code: 2, msg: err.Error()}
	}
	if !byCert {
		req.SetBasicAuth(f.tls.user, password)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("admin listener %s: %w%s", f.addr, err, adminTLSHint(err, scheme == "https", f.tls.cert != ""))
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode == http.StatusBadRequest && scheme == "http" && bytes.Contains(b, []byte("HTTPS")) {
		return &exitError{code: 1, msg: fmt.Sprintf("admin listener %s requires TLS and this command spoke plaintext: pass --tls-ca FILE (the CA of the node's admin.tls certificate), or --tls for the system's CAs; and --tls-cert/--tls-key if it requires a client certificate", f.addr)}
	}
	if resp.StatusCode == http.StatusNotFound && !bytes.Contains(b, []byte("no such")) {
		return fmt.Errorf("admin listener %s: %s serves no user administration (a node without users, or an older ferry)", f.addr, path)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// adminTLSHint says what to pass when a request to the admin listener
// failed at its TLS handshake (https: the command spoke TLS; cert: it gave
// a client certificate).
func adminTLSHint(err error, https, cert bool) string {
	msg := err.Error()
	switch {
	case !https:
		return ""
	case strings.Contains(msg, "server gave HTTP response to HTTPS client"):
		return " (the admin listener is plaintext: drop --tls, --tls-ca, --tls-cert and --tls-key)"
	case strings.Contains(msg, "unknown authority"):
		return " (--tls-ca must name the CA that signed the node's admin.tls certificate)"
	case cert && strings.Contains(msg, "certificate required"):
		// Go sends no certificate the server's CA list does not take.
		return " (the admin listener did not take this client certificate: it must be signed by the CA of the node's admin.tls.client_ca_file)"
	case strings.Contains(msg, "certificate required") || (!cert && (strings.Contains(msg, "bad certificate") || strings.Contains(msg, "EOF") || strings.Contains(msg, "reset"))):
		return " (the admin listener requires a client certificate, mutual TLS: pass --tls-cert and --tls-key)"
	case strings.Contains(msg, "bad certificate") || strings.Contains(msg, "unknown certificate authority"):
		return " (the admin listener refused this client certificate: it must be signed by the CA of admin.tls.client_ca_file)"
	}
	return ""
}

// password is --user's password, from --password-file or $FERRY_PASSWORD.
func (t tlsFlags) password() (string, error) {
	if t.passwordFile != "" {
		b, err := os.ReadFile(t.passwordFile)
		if err != nil {
			return "", &exitError{code: 2, msg: fmt.Sprintf("--password-file: %v", err)}
		}
		p, _, _ := strings.Cut(string(b), "\n")
		return strings.TrimSuffix(p, "\r"), nil
	}
	if p, ok := os.LookupEnv(EnvPassword); ok {
		return p, nil
	}
	return "", &exitError{code: 2, msg: "--user " + t.user + " needs a password: set $" + EnvPassword + " or give --password-file"}
}

// readSecret reads a new password from stdin: its first line.
func readSecret(cmd *cobra.Command) (string, error) {
	line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	p := strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	if p == "" {
		return "", &exitError{code: 2, msg: "no password on stdin (the new user's password, its first line)"}
	}
	return p, nil
}

func userPath(name string) string { return "/v1/users/" + url.PathEscape(name) }

func newUserAddCmd() *cobra.Command {
	var f adminFlags
	var super, cert, noPassword bool
	cmd := &cobra.Command{
		Use:   "add NAME",
		Short: "Add a user to a running node (its password read from stdin)",
		Long: `Adds a user to a running node, through its admin listener, at once and for
good (the node keeps it in its data directory; docs/security.md). The new
user's password is the first line of stdin; the node stores only its bcrypt
hash. Needs a super user (--user).

  printf '%s\n' "$NEW_PASSWORD" | ferry user add alice --admin 127.0.0.1:9090 --user admin
  ferry acl add alice --resource Topic:orders --action Pub --admin 127.0.0.1:9090 --user admin`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := security.UserRequest{Name: args[0], Super: super, Certificate: cert}
			if !noPassword {
				p, err := readSecret(cmd)
				if err != nil {
					return err
				}
				req.Password = p
			} else if !cert {
				return &exitError{code: 2, msg: "--no-password needs --certificate: the user could never authenticate"}
			}
			if err := f.call(cmd.Context(), http.MethodPost, "/v1/users", req, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "added user %s\n", args[0])
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVar(&super, "super", false, "a super user: may do everything, including this")
	cmd.Flags().BoolVar(&cert, "certificate", false, "may authenticate by a client certificate naming it (mutual TLS)")
	cmd.Flags().BoolVar(&noPassword, "no-password", false, "no password (with --certificate); stdin is not read")
	return cmd
}

func newUserDeleteCmd() *cobra.Command {
	var f adminFlags
	cmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "Remove a user from a running node: its next request is refused",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.call(cmd.Context(), http.MethodDelete, userPath(args[0]), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted user %s\n", args[0])
			return nil
		},
	}
	f.add(cmd)
	return cmd
}

func newUserPasswdCmd() *cobra.Command {
	var f adminFlags
	cmd := &cobra.Command{
		Use:   "passwd NAME",
		Short: "Set a user's password on a running node (read from stdin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := readSecret(cmd)
			if err != nil {
				return err
			}
			if err := f.call(cmd.Context(), http.MethodPut, userPath(args[0])+"/password", security.UserRequest{Password: p}, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "set the password of %s\n", args[0])
			return nil
		},
	}
	f.add(cmd)
	return cmd
}

func newUserListCmd() *cobra.Command {
	var f adminFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List a running node's users (never a password or hash)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var users []security.UserInfo
			if err := f.call(cmd.Context(), http.MethodGet, "/v1/users", nil, &users); err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(users)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "USER\tSUPER\tAUTH\tACL ENTRIES\tFROM")
			for _, u := range users {
				var by []string
				if u.Password {
					by = append(by, "password")
				}
				if u.Certificate {
					by = append(by, "certificate")
				}
				fmt.Fprintf(tw, "%s\t%v\t%s\t%d\t%s\n", u.Name, u.Super, strings.Join(by, ","), len(u.Policies), u.From)
			}
			return tw.Flush()
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func init() { rootCmd.AddCommand(newACLCmd()) }

func newACLCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "acl",
		Short: "Work with the ACL entries of a running node's users",
	}
	cmd.AddCommand(newACLListCmd(), newACLCheckCmd(), newACLChangeCmd("add", http.MethodPost), newACLChangeCmd("delete", http.MethodDelete))
	return cmd
}

func newACLListCmd() *cobra.Command {
	var f adminFlags
	cmd := &cobra.Command{
		Use:   "list USER",
		Short: "List a user's ACL entries on a running node",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var ps []security.Policy
			if err := f.call(cmd.Context(), http.MethodGet, userPath(args[0])+"/acl", nil, &ps); err != nil {
				return err
			}
			for _, p := range ps {
				fmt.Fprintln(cmd.OutOrStdout(), security.PolicyString(p))
			}
			return nil
		},
	}
	f.add(cmd)
	return cmd
}

func newACLCheckCmd() *cobra.Command {
	var f adminFlags
	var resource, action, source string
	cmd := &cobra.Command{
		Use:   "check USER --resource R --action A [--source-ip IP]",
		Short: "Say whether a running node would allow a user an action on a resource, and which entry decides",
		Long: `Check asks the node's admin listener how it would judge a request of
USER now: one action (Pub, Sub, Create, Update, Delete, Get or List) on one
resource (Topic:NAME, Group:NAME or Cluster; a group's retry and
dead-letter topics are Group:<group>), from --source-ip (default: an
address no source_ips entry names). It prints "allowed" or "denied" with
the entry that decided (a Deny wins), and exits 1 when denied.`,
		Example: `  ferry acl check billing --resource Topic:orders.eu --action Sub --admin 127.0.0.1:9090 --user admin`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if resource == "" || action == "" {
				return &exitError{code: 2, msg: "--resource and --action are required"}
			}
			q := url.Values{"resource": {resource}, "action": {action}}
			if source != "" {
				q.Set("source_ip", source)
			}
			var res security.CheckResult
			if err := f.call(cmd.Context(), http.MethodGet, userPath(args[0])+"/check?"+q.Encode(), nil, &res); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), res.String())
			if !res.Allowed {
				return &exitError{code: 1}
			}
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().StringVar(&resource, "resource", "", "Topic:NAME, Group:NAME or Cluster (one, not a pattern)")
	cmd.Flags().StringVar(&action, "action", "", "Pub, Sub, Create, Update, Delete, Get or List")
	cmd.Flags().StringVar(&source, "source-ip", "", "the client's IP address (default: none that a source_ips entry names)")
	return cmd
}

func newACLChangeCmd(verb, method string) *cobra.Command {
	var f adminFlags
	var p security.Policy
	short := "Add an ACL entry to a user of a running node, at once and for good"
	if verb == "delete" {
		short = "Remove a user's ACL entries equal to the one given (as `ferry acl list` shows it)"
	}
	cmd := &cobra.Command{
		Use:   verb + " USER --resource R --action A",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.call(cmd.Context(), method, userPath(args[0])+"/acl", p, nil); err != nil {
				return err
			}
			word := "added to"
			if verb == "delete" {
				word = "deleted from"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s %s\n", security.PolicyString(p), word, args[0])
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().StringSliceVar(&p.Resources, "resource", nil, "Topic:NAME, Group:NAME, Cluster or * (NAME exact, a prefix ending in *, or *); repeatable")
	cmd.Flags().StringSliceVar(&p.Actions, "action", nil, "Pub, Sub, Create, Update, Delete, Get, List or All; repeatable")
	cmd.Flags().StringVar(&p.Decision, "decision", "Allow", "Allow or Deny (deny wins)")
	cmd.Flags().StringSliceVar(&p.SourceIPs, "source-ip", nil, "only for clients from this address or network (CIDR); repeatable")
	return cmd
}
