//! Keyboard focus for any control: a wrapper that joins iced's focus chain (Tab /
//! Shift+Tab run `focus_next` / `focus_previous` over every focusable widget, text fields
//! included), draws a focus ring, and activates its control with Enter or Space.
//!
//! iced 0.14's buttons, checkboxes and pick lists are not focusable themselves; wrapping
//! them in [`focusable`] makes every control reachable from the keyboard. A mouse press
//! moves the focus to the control under the pointer (or clears it), as text fields do.
//! A pick list's menu cannot be opened from code, so the focusable [`pick_list`] changes
//! its choice in place: Up / Down pick the previous / next option, Enter / Space the next
//! one (wrapping around); the mouse still opens the menu.

use iced_core::keyboard::{self, key::Named};
use iced_core::layout;
use iced_core::mouse;
use iced_core::overlay;
use iced_core::renderer;
use iced_core::widget::operation::Focusable;
use iced_core::widget::{Operation, Tree, tree};
use iced_core::{
    Border, Clipboard, Color, Element, Event, Layout, Length, Rectangle, Shell, Size, Vector,
    Widget,
};

/// Colour of the focus ring (high contrast on the dark theme).
pub(crate) const RING: Color = Color::from_rgb(1.0, 0.82, 0.25);

/// A control that can take the keyboard focus.
#[allow(missing_debug_implementations)]
pub(crate) struct Focus<'a, Message, Theme, Renderer> {
    content: Element<'a, Message, Theme, Renderer>,
    on_activate: Option<Message>,
    on_up: Option<Message>,
    on_down: Option<Message>,
}

/// Wraps `content` so that Tab reaches it and Enter / Space sends `on_activate` (when
/// `None`, the control is disabled and skipped by activation but still shows focus).
pub(crate) fn focusable<'a, Message, Theme, Renderer>(
    content: impl Into<Element<'a, Message, Theme, Renderer>>,
    on_activate: Option<Message>,
) -> Focus<'a, Message, Theme, Renderer> {
    Focus {
        content: content.into(),
        on_activate,
        on_up: None,
        on_down: None,
    }
}

impl<Message, Theme, Renderer> Focus<'_, Message, Theme, Renderer> {
    /// Up / Down (when focused) send these messages.
    pub(crate) fn on_arrows(mut self, up: Option<Message>, down: Option<Message>) -> Self {
        self.on_up = up;
        self.on_down = down;
        self
    }
}

#[derive(Debug, Default)]
struct State {
    focused: bool,
}

impl Focusable for State {
    fn is_focused(&self) -> bool {
        self.focused
    }

    fn focus(&mut self) {
        self.focused = true;
    }

    fn unfocus(&mut self) {
        self.focused = false;
    }
}

impl<Message, Theme, Renderer> Widget<Message, Theme, Renderer>
    for Focus<'_, Message, Theme, Renderer>
where
    Renderer: renderer::Renderer,
    Message: Clone,
{
    fn tag(&self) -> tree::Tag {
        tree::Tag::of::<State>()
    }

    fn state(&self) -> tree::State {
        tree::State::new(State::default())
    }

    fn children(&self) -> Vec<Tree> {
        vec![Tree::new(&self.content)]
    }

    fn diff(&self, tree: &mut Tree) {
        tree.diff_children(std::slice::from_ref(&self.content));
    }

    fn size(&self) -> Size<Length> {
        self.content.as_widget().size()
    }

    fn layout(
        &mut self,
        tree: &mut Tree,
        renderer: &Renderer,
        limits: &layout::Limits,
    ) -> layout::Node {
        self.content
            .as_widget_mut()
            .layout(&mut tree.children[0], renderer, limits)
    }

    fn operate(
        &mut self,
        tree: &mut Tree,
        layout: Layout<'_>,
        renderer: &Renderer,
        operation: &mut dyn Operation,
    ) {
        let state: &mut State = tree.state.downcast_mut();
        operation.focusable(None, layout.bounds(), state);
        self.content
            .as_widget_mut()
            .operate(&mut tree.children[0], layout, renderer, operation);
    }

    fn update(
        &mut self,
        tree: &mut Tree,
        event: &Event,
        layout: Layout<'_>,
        cursor: mouse::Cursor,
        renderer: &Renderer,
        clipboard: &mut dyn Clipboard,
        shell: &mut Shell<'_, Message>,
        viewport: &Rectangle,
    ) {
        {
            let state: &mut State = tree.state.downcast_mut();
            match event {
                Event::Mouse(mouse::Event::ButtonPressed(_)) => {
                    let over = cursor.is_over(layout.bounds());
                    if state.focused != over {
                        state.focused = over;
                        shell.request_redraw();
                    }
                }
                Event::Keyboard(keyboard::Event::KeyPressed { key, modifiers, .. })
                    if state.focused && modifiers.is_empty() =>
                {
                    let message = match key.as_ref() {
                        keyboard::Key::Named(Named::Enter | Named::Space) => {
                            Some(&self.on_activate)
                        }
                        keyboard::Key::Named(Named::ArrowUp) if self.on_up.is_some() => {
                            Some(&self.on_up)
                        }
                        keyboard::Key::Named(Named::ArrowDown) if self.on_down.is_some() => {
                            Some(&self.on_down)
                        }
                        _ => None,
                    };
                    if let Some(message) = message {
                        if let Some(message) = message {
                            shell.publish(message.clone());
                        }
                        shell.capture_event();
                        return;
                    }
                }
                _ => {}
            }
        }
        self.content.as_widget_mut().update(
            &mut tree.children[0],
            event,
            layout,
            cursor,
            renderer,
            clipboard,
            shell,
            viewport,
        );
    }

    fn mouse_interaction(
        &self,
        tree: &Tree,
        layout: Layout<'_>,
        cursor: mouse::Cursor,
        viewport: &Rectangle,
        renderer: &Renderer,
    ) -> mouse::Interaction {
        self.content.as_widget().mouse_interaction(
            &tree.children[0],
            layout,
            cursor,
            viewport,
            renderer,
        )
    }

    fn draw(
        &self,
        tree: &Tree,
        renderer: &mut Renderer,
        theme: &Theme,
        style: &renderer::Style,
        layout: Layout<'_>,
        cursor: mouse::Cursor,
        viewport: &Rectangle,
    ) {
        self.content.as_widget().draw(
            &tree.children[0],
            renderer,
            theme,
            style,
            layout,
            cursor,
            viewport,
        );
        let state: &State = tree.state.downcast_ref();
        if state.focused {
            let bounds = layout.bounds().expand(3.0);
            renderer.fill_quad(
                renderer::Quad {
                    bounds,
                    border: Border {
                        color: RING,
                        width: 2.0,
                        radius: 6.0.into(),
                    },
                    ..renderer::Quad::default()
                },
                Color::TRANSPARENT,
            );
        }
    }

    fn overlay<'b>(
        &'b mut self,
        tree: &'b mut Tree,
        layout: Layout<'b>,
        renderer: &Renderer,
        viewport: &Rectangle,
        translation: Vector,
    ) -> Option<overlay::Element<'b, Message, Theme, Renderer>> {
        self.content.as_widget_mut().overlay(
            &mut tree.children[0],
            layout,
            renderer,
            viewport,
            translation,
        )
    }
}

impl<'a, Message, Theme, Renderer> From<Focus<'a, Message, Theme, Renderer>>
    for Element<'a, Message, Theme, Renderer>
where
    Message: 'a + Clone,
    Theme: 'a,
    Renderer: 'a + renderer::Renderer,
{
    fn from(focus: Focus<'a, Message, Theme, Renderer>) -> Self {
        Element::new(focus)
    }
}

/// Button styles, so that `button::secondary` works next to [`button()`].
pub(crate) mod button {
    pub(crate) use iced::widget::button::{danger, primary, secondary};
}

/// A button that takes the keyboard focus: iced's button plus [`focusable`], with the
/// same builder methods the screens use.
#[allow(missing_debug_implementations)]
pub(crate) struct Button<'a, Message> {
    inner: iced::widget::Button<'a, Message>,
    on_press: Option<Message>,
}

/// A focusable button with `content` as its label.
pub(crate) fn button<'a, Message: Clone + 'a>(
    content: impl Into<iced::Element<'a, Message>>,
) -> Button<'a, Message> {
    Button {
        inner: iced::widget::button(content),
        on_press: None,
    }
}

impl<'a, Message: Clone + 'a> Button<'a, Message> {
    /// Sends `message` when pressed (or activated from the keyboard).
    pub(crate) fn on_press(self, message: Message) -> Self {
        self.on_press_maybe(Some(message))
    }

    /// Like [`Button::on_press`]; `None` disables the button.
    pub(crate) fn on_press_maybe(self, message: Option<Message>) -> Self {
        Self {
            inner: self.inner.on_press_maybe(message.clone()),
            on_press: message,
        }
    }

    /// Sets the style.
    pub(crate) fn style(
        self,
        style: impl Fn(&iced::Theme, iced::widget::button::Status) -> iced::widget::button::Style + 'a,
    ) -> Self {
        Self {
            inner: self.inner.style(style),
            on_press: self.on_press,
        }
    }
}

impl<'a, Message: Clone + 'a> From<Button<'a, Message>> for iced::Element<'a, Message> {
    fn from(button: Button<'a, Message>) -> Self {
        focusable(button.inner, button.on_press).into()
    }
}

/// A checkbox that takes the keyboard focus (Enter / Space toggles it).
pub(crate) fn checkbox<'a, Message: Clone + 'a>(
    checked: bool,
    label: &'a str,
    on_toggle: Option<fn(bool) -> Message>,
) -> iced::Element<'a, Message> {
    let activate = on_toggle.map(|f| f(!checked));
    focusable(
        iced::widget::checkbox(checked)
            .label(label)
            .on_toggle_maybe(on_toggle),
        activate,
    )
    .into()
}

/// A drop-down list that takes the keyboard focus: the mouse opens iced's pick list; from
/// the keyboard, Up / Down choose the previous / next option and Enter / Space the next one,
/// wrapping around (iced cannot open the menu from code). `selected` need not be among
/// `options` (a device that went away): the keys then start from the first option.
pub(crate) fn pick_list<'a, Message: Clone + 'a>(
    options: Vec<String>,
    selected: String,
    on_select: fn(String) -> Message,
    width: iced::Length,
    id: &'static str,
) -> iced::Element<'a, Message> {
    let count = options.len();
    let position = options.iter().position(|o| *o == selected);
    let pick = |index: usize| -> Option<Message> {
        let option = &options[index % count];
        (*option != selected).then(|| on_select(option.clone()))
    };
    let (previous, next) = match position {
        _ if count == 0 => (None, None),
        Some(i) => (pick(i + count - 1), pick(i + 1)),
        None => (pick(count - 1), pick(0)),
    };
    let list = iced::widget::pick_list(options, Some(selected), on_select).width(width);
    iced::widget::container(focusable(list, next.clone()).on_arrows(previous, next))
        .id(id)
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced::widget::{button, column};
    use iced_test::simulator;

    #[derive(Debug, Clone, PartialEq)]
    enum Message {
        First,
        Second,
    }

    fn view<'a>() -> iced::Element<'a, Message> {
        column![
            focusable(
                button("First").on_press(Message::First),
                Some(Message::First)
            ),
            focusable(
                button("Second").on_press(Message::Second),
                Some(Message::Second)
            ),
        ]
        .into()
    }

    #[test]
    fn a_focused_control_shows_in_the_focus_chain_and_enter_activates_it() {
        let mut ui = simulator(view());
        assert!(ui.find(iced_test::selector::is_focused()).is_err());
        // Enter with nothing focused does nothing.
        ui.tap_key(keyboard::Key::Named(Named::Enter));
        // A press focuses the control (and the button handles the click itself).
        ui.click("Second").unwrap();
        assert!(ui.find(iced_test::selector::is_focused()).is_ok());
        ui.tap_key(keyboard::Key::Named(Named::Enter));
        ui.tap_key(keyboard::Key::Named(Named::Space));
        let messages: Vec<Message> = ui.into_messages().collect();
        assert_eq!(
            messages,
            vec![Message::Second, Message::Second, Message::Second]
        );
    }

    fn choose(option: String) -> String {
        option
    }

    /// The messages that `keys` produce on a focused pick list of `options` at `selected`.
    fn keys_on_pick_list(options: &[&str], selected: &str, keys: &[Named]) -> Vec<String> {
        let options: Vec<String> = options.iter().map(|o| (*o).to_owned()).collect();
        let mut ui = simulator(pick_list(
            options,
            selected.to_owned(),
            choose,
            iced::Length::Fixed(200.0),
            "list",
        ));
        // Unfocused, keys do nothing.
        ui.tap_key(keyboard::Key::Named(Named::ArrowDown));
        // A press focuses it (and opens iced's menu, which the mouse would use).
        ui.click(iced_test::selector::id("list")).unwrap();
        assert!(ui.find(iced_test::selector::is_focused()).is_ok());
        for key in keys {
            ui.tap_key(keyboard::Key::Named(*key));
        }
        ui.into_messages().collect()
    }

    #[test]
    fn a_focused_pick_list_changes_its_choice_with_the_arrow_keys_and_enter() {
        let options = ["Default", "USB mic", "Headset"];
        assert_eq!(
            keys_on_pick_list(&options, "USB mic", &[Named::ArrowDown]),
            vec!["Headset"]
        );
        assert_eq!(
            keys_on_pick_list(&options, "USB mic", &[Named::ArrowUp]),
            vec!["Default"]
        );
        // Enter and Space take the next option, wrapping around at the end.
        assert_eq!(
            keys_on_pick_list(&options, "Headset", &[Named::Enter, Named::Space]),
            vec!["Default", "Default"]
        );
        assert_eq!(
            keys_on_pick_list(&options, "Default", &[Named::ArrowUp]),
            vec!["Headset"]
        );
        // A single option: nothing to change.
        assert!(
            keys_on_pick_list(&["Default"], "Default", &[Named::ArrowDown, Named::Enter])
                .is_empty()
        );
    }
}
