//! The experience library's operations ([`engram_experience::ops`]),
//! answered on the blocking pool (the journal is SQLite).

use engram_experience::files::{self, ImportReport};
use engram_experience::ops::{
    EditInsight, ImportInsights, InsightHistory, InsightList, ListInsights, SetInsightStatus, ShowInsight,
};
use engram_experience::{Experience, Insight};
use engram_ops::{Error, Operation};
use engram_store::Store;

/// The experience library of one journal.
pub struct ExperienceService {
    experience: Experience,
}

impl ExperienceService {
    /// The library in `store`.
    pub fn new(store: &Store) -> Self {
        Self { experience: Experience::new(store.clone()) }
    }

    /// The library itself (for in-process work: learning, evaluation).
    pub fn library(&self) -> &Experience {
        &self.experience
    }

    /// [`ListInsights`].
    pub async fn list(&self, request: ListInsights) -> Result<InsightList, Error> {
        request.validate()?;
        let experience = self.experience.clone();
        blocking(move || {
            let library = experience.library()?;
            Ok(InsightList { insights: library.into_values().filter(|insight| request.admits(insight)).collect() })
        })
        .await
    }

    /// [`ShowInsight`].
    pub async fn show(&self, request: ShowInsight) -> Result<InsightHistory, Error> {
        request.validate()?;
        let experience = self.experience.clone();
        blocking(move || {
            let events = experience.events(Some(&request.id))?;
            let insight = engram_experience::fold(&events)?
                .remove(&request.id)
                .ok_or_else(|| engram_experience::ExperienceError::UnknownInsight(request.id.clone()))?;
            Ok(InsightHistory { insight, events })
        })
        .await
    }

    /// [`SetInsightStatus`].
    pub async fn set_status(&self, request: SetInsightStatus) -> Result<Insight, Error> {
        request.validate()?;
        let experience = self.experience.clone();
        blocking(move || Ok(experience.set_status(&request.editor, &request.id, request.status, &request.reason)?))
            .await
    }

    /// [`EditInsight`].
    pub async fn edit(&self, request: EditInsight) -> Result<Insight, Error> {
        request.validate()?;
        let experience = self.experience.clone();
        blocking(move || {
            experience.record(&request.editor, vec![(Some(request.id.clone()), request.change())])?;
            Ok(experience.get(&request.id)?)
        })
        .await
    }

    /// [`ImportInsights`].
    pub async fn import(&self, request: ImportInsights) -> Result<ImportReport, Error> {
        request.validate()?;
        let experience = self.experience.clone();
        blocking(move || Ok(files::apply(&experience, &request.files, &request.editor)?)).await
    }
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T, Error> + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| Error::internal(format!("the insight library panicked: {err}")))?
}
