using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Quantization;

/// <summary>
/// Static calibration: streams batches from a data source through a user's forward step and folds every named
/// activation into its own observer, then computes static parameters per tensor. Memory stays flat whatever the number
/// of batches: observers hold O(parameters), batches are never kept.
/// </summary>
/// <remarks>
/// Observers live across runs, and each observation is all or nothing. A run cancelled between batches leaves every
/// observer with exactly the batches finished, and another run on the rest of the data continues from there; a step
/// cancelled (or failing) halfway through a batch may have recorded some of that batch's tensors, so resume from the
/// next batch or start over. Not thread-safe.
/// </remarks>
public sealed class Calibrator
{
    private readonly Func<string, IQuantizationObserver> _createObserver;
    private readonly Dictionary<string, IQuantizationObserver> _observers = new(StringComparer.Ordinal);
    private readonly ILogger _logger;

    /// <summary>Initializes a new instance of the <see cref="Calibrator"/> class.</summary>
    /// <param name="createObserver">Makes the observer of a tensor name the first time it is recorded; any <see cref="IQuantizationObserver"/>, including your own.</param>
    /// <param name="logger">Receives a line per run and per new tensor; none when <see langword="null"/>.</param>
    /// <exception cref="ArgumentNullException"><paramref name="createObserver"/> is <see langword="null"/>.</exception>
    public Calibrator(Func<string, IQuantizationObserver> createObserver, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(createObserver);
        _createObserver = createObserver;
        _logger = logger ?? NullLogger.Instance;
    }

    /// <summary>Gets the observer of every tensor recorded so far.</summary>
    public IReadOnlyDictionary<string, IQuantizationObserver> Observers => _observers;

    /// <summary>Runs the forward step on every batch of the source.</summary>
    /// <typeparam name="TBatch">The batch type.</typeparam>
    /// <param name="source">The calibration data.</param>
    /// <param name="step">The forward step.</param>
    /// <param name="progress">Receives a report after each batch.</param>
    /// <param name="cancellationToken">Cancels between batches (and inside the step, if it honours the token).</param>
    /// <returns>The number of batches run.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> or <paramref name="step"/> is <see langword="null"/>.</exception>
    /// <exception cref="OperationCanceledException">The token was cancelled; the observers keep what was recorded (see the remarks on the class).</exception>
    public async Task<int> RunAsync<TBatch>(ICalibrationDataSource<TBatch> source, CalibrationStep<TBatch> step, IProgress<CalibrationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(step);
        Recorder recorder = new(this);
        int batches = 0;
        Log.RunStarting(_logger, source.Count, null);
        await foreach (TBatch batch in source.ReadBatchesAsync(cancellationToken).ConfigureAwait(false))
        {
            await step(batch, recorder, cancellationToken).ConfigureAwait(false);
            batches++;
            progress?.Report(new CalibrationProgress(batches, source.Count));
            cancellationToken.ThrowIfCancellationRequested();
        }

        Log.RunFinished(_logger, batches, _observers.Count, null);
        return batches;
    }

    /// <summary>Computes the static parameters of every tensor recorded so far.</summary>
    /// <returns>The parameters by tensor name.</returns>
    public IReadOnlyDictionary<string, QuantizationParameters> ComputeParameters() =>
        _observers.ToDictionary(entry => entry.Key, entry => entry.Value.ComputeParameters(), StringComparer.Ordinal);

    private IQuantizationObserver ObserverFor(string name)
    {
        if (!_observers.TryGetValue(name, out IQuantizationObserver? observer))
        {
            observer = _createObserver(name) ?? throw new InvalidOperationException($"The observer factory returned null for '{name}'.");
            _observers.Add(name, observer);
            Log.NewTensor(_logger, name, observer.GetType().Name, null);
        }

        return observer;
    }

    private sealed class Recorder(Calibrator calibrator) : IActivationRecorder
    {
        public void Record(string name, ReadOnlySpan<float> values, ReadOnlySpan<int> shape)
        {
            ArgumentNullException.ThrowIfNull(name);
            calibrator.ObserverFor(name).Observe(values, shape, name);
        }
    }

    private static class Log
    {
        public static readonly Action<ILogger, int?, Exception?> RunStarting =
            LoggerMessage.Define<int?>(LogLevel.Information, new EventId(1, nameof(RunStarting)), "Calibration run starting ({Batches} batches)");

        public static readonly Action<ILogger, int, int, Exception?> RunFinished =
            LoggerMessage.Define<int, int>(LogLevel.Information, new EventId(2, nameof(RunFinished)), "Calibration run finished: {Batches} batches, {Tensors} tensors observed");

        public static readonly Action<ILogger, string, string, Exception?> NewTensor =
            LoggerMessage.Define<string, string>(LogLevel.Debug, new EventId(3, nameof(NewTensor)), "Observing tensor {Name} with {Observer}");
    }
}
