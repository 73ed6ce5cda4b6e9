//! Chat templates: the model's own (Jinja, from the GGUF metadata) rendered
//! with minijinja, or a built-in ChatML template when it has none.

use minijinja::{Environment, context};
use serde::{Deserialize, Serialize};

use crate::ModelError;

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions for the model.
    System,
    /// The person.
    User,
    /// The model.
    Assistant,
    /// A tool's result.
    Tool,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Its author.
    pub role: Role,
    /// Its text.
    pub content: String,
}

impl Message {
    /// A message from `role`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self { role, content: content.into() }
    }
}

/// ChatML, the format of SmolLM2, Qwen and many others.
pub const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
    /// Whether this is the model's own template (not the ChatML fallback).
    pub from_model: bool,
}

impl ChatTemplate {
    /// Compiles `source` (the model's `tokenizer.chat_template`), or ChatML
    /// when `None`.
    pub fn new(source: Option<&str>, bos: &str, eos: &str) -> Result<Self, ModelError> {
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |message: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, message))
        });
        env.add_template_owned("chat", source.unwrap_or(CHATML).to_owned())
            .map_err(|err| ModelError::Inference(format!("the model's chat template does not compile: {err}")))?;
        Ok(Self { env, bos: bos.to_owned(), eos: eos.to_owned(), from_model: source.is_some() })
    }

    /// The prompt for `messages`, ending where the assistant's reply begins.
    pub fn render(&self, messages: &[Message]) -> Result<String, ModelError> {
        let template = self.env.get_template("chat").map_err(|err| ModelError::Inference(err.to_string()))?;
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => true,
                bos_token => self.bos,
                eos_token => self.eos,
            })
            .map_err(|err| ModelError::InvalidRequest(format!("cannot render the chat template: {err}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_fallback_renders_the_expected_format() {
        let template = ChatTemplate::new(None, "<s>", "</s>").unwrap();
        let prompt =
            template.render(&[Message::new(Role::System, "Be brief."), Message::new(Role::User, "Hi!")]).unwrap();
        assert_eq!(
            prompt,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_string_methods_and_raise_exception_work() {
        let source = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('user first') }}{% endif %}{{ messages[0]['content'].strip() }}";
        let template = ChatTemplate::new(Some(source), "", "").unwrap();
        assert_eq!(template.render(&[Message::new(Role::User, "  x  ")]).unwrap(), "x");
        let err = template.render(&[Message::new(Role::System, "s")]).unwrap_err();
        assert!(err.to_string().contains("user first"), "{err}");
    }
}
