//! Tool declarations and `tool_choice` as Gemini `tools` and `toolConfig`.

use serde_json::{Value, json};

use crate::error::TranslateError;
use crate::gemini::request::{
    FunctionCallingConfig, FunctionCallingMode, FunctionDeclaration, Tool, ToolConfig,
};
use crate::openai::chat::types::ChatCompletionRequest;

/// `tools` (and legacy `functions`) as Gemini tools: one tool with every function declaration,
/// then one tool per built-in (`googleSearch`, `codeExecution`, `urlContext`). Returns the tools
/// and the declared function names.
pub(crate) fn translate_tools(
    request: &ChatCompletionRequest,
) -> Result<(Vec<Tool>, Vec<String>), TranslateError> {
    let mut declarations = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut builtins = Vec::new();
    let functions = request
        .functions
        .iter()
        .flatten()
        .map(|f| ("functions", f, f));
    let tools = request
        .tools
        .iter()
        .flatten()
        .map(|t| ("tools", t, t.get("function").unwrap_or(t)));
    for (i, (list, tool, function)) in tools.chain(functions).enumerate() {
        let param = format!("{list}[{i}]");
        let kind = tool.get("type").and_then(Value::as_str);
        let builtin = match kind {
            Some("google_search") => Some(Tool::GoogleSearch(json!({}))),
            Some("code_execution") => Some(Tool::CodeExecution(json!({}))),
            Some("url_context") => Some(Tool::UrlContext(json!({}))),
            Some("function") => None,
            None if list == "functions" => None,
            // A tool already in Gemini's shape, its configuration passed on as given.
            None => [
                ("googleSearch", Tool::GoogleSearch as fn(Value) -> Tool),
                ("codeExecution", Tool::CodeExecution),
                ("urlContext", Tool::UrlContext),
            ]
            .iter()
            .find_map(|(name, tool_of)| tool.get(*name).map(|config| tool_of(config.clone()))),
            Some(other) => {
                return Err(TranslateError::invalid(
                    format!("Tools of type '{other}' are not supported."),
                    format!("{param}.type"),
                ));
            }
        };
        if let Some(builtin) = builtin {
            builtins.push(builtin);
            continue;
        }
        if kind.is_none() && list == "tools" {
            return Err(TranslateError::invalid(
                "Each tool needs a 'type'.",
                format!("{param}.type"),
            ));
        }
        let name = function.get("name").and_then(Value::as_str).unwrap_or("");
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
        let name_param = if list == "tools" {
            format!("{param}.function.name")
        } else {
            format!("{param}.name")
        };
        if !valid {
            return Err(TranslateError::invalid(
                format!(
                    "Invalid function name '{name}': use 1 to 64 letters, digits, '_', '.', ':' or '-'."
                ),
                name_param,
            ));
        }
        if names.iter().any(|known| known == name) {
            return Err(TranslateError::invalid(
                format!("Duplicate function name '{name}'."),
                name_param,
            ));
        }
        names.push(name.to_owned());
        // `parametersJsonSchema` takes real JSON Schema (`$ref`, `anyOf`, `additionalProperties`);
        // the legacy `parameters` field rejects those keywords with a 400.
        let parameters_json_schema = schema_of(
            function.get("parameters"),
            &format!("{param}.function.parameters"),
        )?;
        declarations.push(FunctionDeclaration {
            name: name.to_owned(),
            description: function
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_owned),
            parameters_json_schema,
        });
    }
    let mut tools = Vec::new();
    if !declarations.is_empty() {
        tools.push(Tool::FunctionDeclarations(declarations));
    }
    tools.extend(builtins);
    Ok((tools, names))
}

/// A JSON schema as Gemini takes it: parsed when sent as a string, without the root `$schema`.
pub(crate) fn schema_of(
    schema: Option<&Value>,
    param: &str,
) -> Result<Option<Value>, TranslateError> {
    let mut schema = match schema {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(text)) => serde_json::from_str::<Value>(text).map_err(|error| {
            TranslateError::invalid(format!("The schema is not valid JSON: {error}."), param)
        })?,
        Some(other) => other.clone(),
    };
    if let Value::Object(map) = &mut schema {
        map.remove("$schema");
    }
    Ok(Some(schema))
}

/// What `tool_choice` asks for.
pub(crate) enum ToolChoice {
    /// A `functionCallingConfig`.
    Config(FunctionCallingConfig),
    /// `allowed_tools` in auto mode: only these declarations are sent, with mode AUTO
    /// (`allowedFunctionNames` is only valid with ANY).
    OnlyDeclared(Vec<String>),
}

impl ToolChoice {
    pub(crate) fn into_config(self) -> ToolConfig {
        let function_calling_config = match self {
            Self::Config(config) => config,
            Self::OnlyDeclared(_) => FunctionCallingConfig::mode(FunctionCallingMode::Auto),
        };
        ToolConfig {
            function_calling_config,
        }
    }
}

pub(crate) fn keep_only(tools: Vec<Tool>, names: &[String]) -> Vec<Tool> {
    tools
        .into_iter()
        .map(|mut tool| {
            if let Tool::FunctionDeclarations(declarations) = &mut tool {
                declarations.retain(|d| names.contains(&d.name));
            }
            tool
        })
        .collect()
}

pub(crate) fn translate_tool_choice(
    request: &ChatCompletionRequest,
    declared: &[String],
) -> Result<Option<ToolChoice>, TranslateError> {
    let (choice, param) = match (&request.tool_choice, &request.function_call) {
        (Some(choice), _) => (choice, "tool_choice"),
        (None, Some(choice)) => (choice, "function_call"),
        (None, None) => return Ok(None),
    };
    let requires_tools = |mode: &str| {
        if declared.is_empty() {
            Err(TranslateError::invalid(
                format!("'{param}' is '{mode}' but no functions were given in 'tools'."),
                param,
            ))
        } else {
            Ok(())
        }
    };
    let named = |name: &str| -> Result<ToolChoice, TranslateError> {
        if !declared.iter().any(|known| known == name) {
            return Err(TranslateError::invalid(
                format!("'{param}' names the function '{name}', which is not declared in 'tools'."),
                param,
            ));
        }
        Ok(ToolChoice::Config(FunctionCallingConfig {
            mode: FunctionCallingMode::Any,
            allowed_function_names: Some(vec![name.to_owned()]),
        }))
    };
    let choice = match choice {
        Value::String(mode) => match mode.as_str() {
            "auto" => ToolChoice::Config(FunctionCallingConfig::mode(FunctionCallingMode::Auto)),
            "none" => ToolChoice::Config(FunctionCallingConfig::mode(FunctionCallingMode::None)),
            "required" | "any" => {
                requires_tools(mode)?;
                ToolChoice::Config(FunctionCallingConfig::mode(FunctionCallingMode::Any))
            }
            other => {
                return Err(TranslateError::invalid(
                    format!(
                        "Invalid '{param}' value '{other}': expected 'auto', 'none', 'required' or an object."
                    ),
                    param,
                ));
            }
        },
        Value::Object(object) => {
            if let Some(name) = object
                .get("function")
                .and_then(|f| f.get("name"))
                .or_else(|| object.get("name"))
                .and_then(Value::as_str)
            {
                named(name)?
            } else if let Some(allowed) = object.get("allowed_tools") {
                let names: Vec<String> = allowed
                    .get("tools")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|tool| {
                        tool.get("function")
                            .unwrap_or(tool)
                            .get("name")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    })
                    .collect();
                for name in &names {
                    named(name)?;
                }
                match allowed.get("mode").and_then(Value::as_str) {
                    Some("required") => ToolChoice::Config(FunctionCallingConfig {
                        mode: FunctionCallingMode::Any,
                        allowed_function_names: Some(names),
                    }),
                    _ => ToolChoice::OnlyDeclared(names),
                }
            } else {
                return Err(TranslateError::invalid(
                    format!("'{param}' object needs 'function.name'."),
                    param,
                ));
            }
        }
        _ => {
            return Err(TranslateError::invalid(
                format!("Invalid '{param}'."),
                param,
            ));
        }
    };
    Ok(Some(choice))
}

// ---------------------------------------------------------------------------------------------
// Generation config (§3.1, §3.4, §3.5)
// ---------------------------------------------------------------------------------------------
