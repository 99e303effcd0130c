// Package config loads and checks Ferry pipeline files.
//
// A pipeline is one YAML file (see Pipeline for its keys and their defaults).
// Load reads it with koanf, applies environment overrides, decodes it strictly
// and checks it, and reports every problem at once, each with the file, the
// key path ("topics[1].queues") and the line of the key:
//
//   - unknown keys at any depth are errors, except inside the free-form
//     "config" sections of plugins and stages, which their owner checks;
//   - types are not converted: queues: "four" is an error, and so is a
//     duration written as a number (durations are strings: "10s", "1m30s");
//     an integer is fine where a number is expected;
//   - a missing key, or one with no value (null), gets its default; a key
//     that is written keeps its value, so queues: 0 is an error, not 4;
//   - names of the pipeline, node id, generators and flows are lowercase
//     letters, digits, '_' and '-', starting with a letter or digit, at most
//     64 characters; topic and group names follow core/names (letters,
//     digits, '.', '_', '-', at most 249, %RETRY% and %DLQ% reserved), the
//     rule of the broker's admin calls; names are unique within their list;
//   - generators and flows must name a declared topic, and flows that share
//     a consumer group share its topic;
//   - a flow's stages must be types registered in core/stage, and Load asks
//     each stage to check its config section (paths such as
//     "flows[0].stages[1].config.max_attempts"); a sink's keys must apply
//     to its type (path for file, command for exec, url for webhook, …).
//
// Load does not run plugins. ValidatePlugins checks that each plugin type
// exists and asks the plugin to check its config section, through a
// PluginValidator that the plugin host implements.
//
// # Environment overrides
//
// An environment variable FERRY_<KEY> sets a key over the file. Levels are
// separated by a double underscore and names are lowercased:
//
//	FERRY_NODE__DATA_DIR=/tmp/x        node.data_dir: /tmp/x
//	FERRY_PLUGINS__STORAGE__TYPE=file  plugins.storage.type: file
//	FERRY_PRODUCER__RETRIES=5          producer.retries: 5
//	FERRY_TOPICS='[{name: orders}]'    topics: [{name: orders}]
//
// Only variables whose first level is a top-level pipeline key (name, node,
// plugins, topics, producer, generators, flows, tracing) are overrides;
// other FERRY_ variables belong to other parts of Ferry and are ignored here.
// A value is taken as a string where the key is a string, and is otherwise
// read as YAML (a number, a list or mapping in flow style), then decoded by
// the same strict rules as the file: a problem with such a value has line 0
// and names the variable. A variable cannot address one element of a list;
// it sets the whole list.
package config
