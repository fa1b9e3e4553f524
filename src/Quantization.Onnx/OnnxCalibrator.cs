using Google.Protobuf;

using Microsoft.Extensions.Logging;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

using Quantization.Onnx.Protos;

namespace Quantization.Onnx;

/// <summary>
/// Calibration through ONNX Runtime: runs a model on calibration feeds with the tensors to observe exposed as extra
/// graph outputs, and folds each output into its observer as soon as a run returns it, then frees it. Nothing is kept
/// between batches, so memory is flat in the number of samples (ONNX Runtime's Python calibrator keeps every output).
/// </summary>
/// <remarks>
/// Observers live across runs, as with <see cref="Calibrator"/>: a second <see cref="RunAsync"/> continues the
/// statistics. The session is built once, from a copy of the model; the model itself is not changed. Each run executes
/// synchronously on the calling thread (ONNX Runtime's own threads do the work); wrap a call in <see cref="Task.Run(Func{Task})"/>
/// to keep a UI thread free. Not thread-safe.
/// </remarks>
public sealed class OnnxCalibrator : IDisposable
{
    private readonly InferenceSession _session;
    private readonly string[] _tensorNames;

    private readonly Calibrator _calibrator;
    private readonly bool _observe;
    private readonly IActivationRecorder? _tap;

    /// <summary>Initializes a new instance of the <see cref="OnnxCalibrator"/> class.</summary>
    /// <param name="model">The float model.</param>
    /// <param name="tensorNames">The float tensors to observe: graph inputs, node outputs or graph outputs.</param>
    /// <param name="createObserver">Makes the observer of each tensor.</param>
    /// <param name="sessionOptions">
    /// ONNX Runtime's options (threads, optimisation level); its defaults when <see langword="null"/>. The caller keeps
    /// ownership. For a model that stores tensors in external data files, the calibrator sets the directory of those files
    /// (<see cref="OnnxModel.ExternalDataDirectory"/>) on these options, since ONNX Runtime gets the edited model as bytes.
    /// </param>
    /// <param name="logger">Receives a line per run and per tensor; none when <see langword="null"/>.</param>
    /// <exception cref="ArgumentNullException">An argument is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException">A tensor name is not a value of the graph, or not a float tensor.</exception>
    /// <exception cref="InvalidOperationException">The model stores tensors in external data files but has no <see cref="OnnxModel.ExternalDataDirectory"/>.</exception>
    /// <exception cref="OnnxRuntimeException">ONNX Runtime rejects the model.</exception>
    public OnnxCalibrator(OnnxModel model, IEnumerable<string> tensorNames, Func<string, IQuantizationObserver> createObserver, SessionOptions? sessionOptions = null, ILogger? logger = null)
        : this(model, tensorNames, createObserver ?? throw new ArgumentNullException(nameof(createObserver)), sessionOptions, logger, skipNonFloat: false, tap: null)
    {
    }

    /// <summary>
    /// Initializes a new instance of the <see cref="OnnxCalibrator"/> class for the quantizers: it may drop the tensors
    /// ONNX Runtime finds not to be float, and shows every tensor to <paramref name="tap"/> as well as to its observer
    /// (or only to the tap when <paramref name="createObserver"/> is <see langword="null"/>).
    /// </summary>
    internal OnnxCalibrator(OnnxModel model, IEnumerable<string> tensorNames, Func<string, IQuantizationObserver>? createObserver, SessionOptions? sessionOptions, ILogger? logger, bool skipNonFloat, IActivationRecorder? tap)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tensorNames);
        _observe = createObserver is not null;
        _tap = tap;
        _tensorNames = [.. tensorNames.Distinct(StringComparer.Ordinal)];
        ModelProto proto = model.Proto.Clone();
        GraphProto graph = proto.Graph;
        HashSet<string> values = new(graph.Input.Select(i => i.Name).Concat(graph.Node.SelectMany(n => n.Output)), StringComparer.Ordinal);
        HashSet<string> outputs = new(graph.Output.Select(o => o.Name), StringComparer.Ordinal);
        foreach (string name in _tensorNames)
        {
            if (!values.Contains(name))
            {
                throw new ArgumentException($"'{name}' is not an input or node output of the graph.", nameof(tensorNames));
            }

            if (outputs.Add(name))
            {
                // A value with no type: ONNX Runtime infers it.
                graph.Output.Add(new ValueInfoProto { Name = name });
            }
        }

        _calibrator = new Calibrator(createObserver ?? (name => throw new InvalidOperationException($"No observer for '{name}': this calibrator only taps its tensors.")), logger);
        _session = OrtSessions.Create(model, proto.ToByteArray(), sessionOptions);
        string[] nonFloat = [.. _tensorNames.Where(name => _session.OutputMetadata[name].ElementType != typeof(float))];
        if (nonFloat.Length > 0 && !skipNonFloat)
        {
            _session.Dispose();
            throw new ArgumentException($"Only float tensors can be calibrated; {string.Join(", ", nonFloat.Select(n => $"'{n}'"))} {(nonFloat.Length == 1 ? "is" : "are")} not.", nameof(tensorNames));
        }

        _tensorNames = [.. _tensorNames.Except(nonFloat, StringComparer.Ordinal)];
    }

    /// <summary>Gets the tensors observed on each run.</summary>
    public IReadOnlyList<string> TensorNames => _tensorNames;

    /// <summary>Gets the observer of every tensor observed so far.</summary>
    public IReadOnlyDictionary<string, IQuantizationObserver> Observers => _calibrator.Observers;

    /// <summary>Runs the model on every feed of the source and folds the observed tensors into their observers.</summary>
    /// <param name="source">The feeds: one collection of named inputs per run, as <see cref="InferenceSession.Run(IReadOnlyCollection{NamedOnnxValue})"/> takes them.</param>
    /// <param name="progress">Receives a report after each run.</param>
    /// <param name="cancellationToken">Cancels between runs.</param>
    /// <returns>The number of runs.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> is <see langword="null"/>.</exception>
    /// <exception cref="OnnxRuntimeException">ONNX Runtime fails on a feed (wrong input names, shapes or types).</exception>
    /// <exception cref="OperationCanceledException">The token was cancelled; the observers keep the finished runs.</exception>
    public Task<int> RunAsync(ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> source, IProgress<CalibrationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(source);
        return _calibrator.RunAsync(source, Step, progress, cancellationToken);
    }

    /// <summary>Computes the static parameters of every tensor observed so far.</summary>
    /// <returns>The parameters by tensor name.</returns>
    public IReadOnlyDictionary<string, QuantizationParameters> ComputeParameters() => _calibrator.ComputeParameters();

    /// <inheritdoc/>
    public void Dispose() => _session.Dispose();

    private ValueTask Step(IReadOnlyCollection<NamedOnnxValue> feeds, IActivationRecorder recorder, CancellationToken cancellationToken)
    {
        if (_tensorNames.Length == 0)
        {
            return ValueTask.CompletedTask; // nothing to observe (ONNX Runtime refuses a run that asks for no output)
        }

        using RunOptions runOptions = new();
        using CancellationTokenRegistration registration = cancellationToken.Register(() => runOptions.Terminate = true);
        using IDisposableReadOnlyCollection<DisposableNamedOnnxValue> results = _session.Run(feeds, _tensorNames, runOptions);
        foreach (DisposableNamedOnnxValue result in results)
        {
            DenseTensor<float> tensor = (DenseTensor<float>)result.AsTensor<float>();
            if (_observe)
            {
                recorder.Record(result.Name, tensor.Buffer.Span, tensor.Dimensions);
            }

            _tap?.Record(result.Name, tensor.Buffer.Span, tensor.Dimensions);
        }

        cancellationToken.ThrowIfCancellationRequested();
        return ValueTask.CompletedTask;
    }
}
