using System.Numerics.Tensors;

using Google.Protobuf;

using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace Quantization.Onnx;

/// <summary>The search of <see cref="OnnxMixedPrecisionOptions"/>: a sensitivity pass, then bisection over the ranked layers.</summary>
internal sealed class MixedPrecisionSearch
{
    private readonly List<IReadOnlyCollection<NamedOnnxValue>> _feeds;
    private readonly SessionOptions? _sessionOptions;
    private readonly OnnxModel _floatModel;
    private float[][] _reference = [];

    private MixedPrecisionSearch(List<IReadOnlyCollection<NamedOnnxValue>> feeds, SessionOptions? sessionOptions, OnnxModel floatModel)
    {
        _feeds = feeds;
        _sessionOptions = sessionOptions;
        _floatModel = floatModel;
    }

    /// <summary>A layer the search may keep in float.</summary>
    public sealed record Layer(string Name, string OpType, IReadOnlyList<string> Inputs);

    /// <summary>Runs the search.</summary>
    /// <param name="floatModel">The float model (not changed).</param>
    /// <param name="layers">The layers, in graph order.</param>
    /// <param name="quantize">Makes the serialized quantized model that keeps the named layers' activations in float.</param>
    /// <param name="data">The calibration feeds; the first <see cref="OnnxMixedPrecisionOptions.MaxBatches"/> are used.</param>
    /// <param name="options">The target and the number of feeds.</param>
    /// <param name="sessionOptions">ONNX Runtime's options, or <see langword="null"/> for its defaults.</param>
    /// <param name="logger">Receives a line per evaluation.</param>
    /// <param name="cancellationToken">Cancels between evaluations.</param>
    /// <returns>The measurements and the choice.</returns>
    public static async Task<OnnxMixedPrecisionResult> RunAsync(
        OnnxModel floatModel,
        IReadOnlyList<Layer> layers,
        Func<IReadOnlySet<string>, byte[]> quantize,
        ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> data,
        OnnxMixedPrecisionOptions options,
        SessionOptions? sessionOptions,
        ILogger? logger,
        CancellationToken cancellationToken)
    {
        logger ??= NullLogger.Instance;
        List<IReadOnlyCollection<NamedOnnxValue>> feeds = [];
        await foreach (IReadOnlyCollection<NamedOnnxValue> feed in data.ReadBatchesAsync(cancellationToken).ConfigureAwait(false))
        {
            feeds.Add(feed);
            if (feeds.Count == options.MaxBatches)
            {
                break;
            }
        }

        if (feeds.Count == 0)
        {
            throw new InvalidOperationException("The calibration data gave no batches to the mixed-precision search: the source must give the same batches each time it is read.");
        }

        MixedPrecisionSearch search = new(feeds, sessionOptions, floatModel);
        search._reference = search.Outputs(floatModel.Proto.ToByteArray(), cancellationToken);
        return search.Search(layers, quantize, options.TargetCosine, logger, cancellationToken);
    }

    private OnnxMixedPrecisionResult Search(IReadOnlyList<Layer> layers, Func<IReadOnlySet<string>, byte[]> quantize, double target, ILogger logger, CancellationToken cancellationToken)
    {
        HashSet<string> all = new(layers.Select(l => l.Name), StringComparer.Ordinal);
        double Evaluate(IEnumerable<string> keep, string what)
        {
            cancellationToken.ThrowIfCancellationRequested();
            double cosine = Cosine(Outputs(quantize(new HashSet<string>(keep, StringComparer.Ordinal)), cancellationToken));
            Log.Evaluated(logger, what, cosine, null);
            return cosine;
        }

        double weightsOnly = Evaluate(all, "weights only");
        double allQuantized = Evaluate([], "every activation");
        (Layer Layer, double Cosine)[] ranked = [.. layers
            .Select((layer, index) => (layer, index, cosine: Evaluate(all.Where(n => n != layer.Name), "only " + layer.Name)))
            .OrderBy(x => x.cosine)
            .ThenBy(x => x.index)
            .Select(x => (x.layer, x.cosine))];

        // Keep the k most sensitive in float: f(k) fails at lo and passes at hi (k = n is the weights-only model).
        int kept = 0;
        double final = allQuantized;
        if (!(allQuantized >= target))
        {
            (int lo, int hi) = (0, ranked.Length);
            final = weightsOnly;
            while (hi - lo > 1)
            {
                int mid = lo + ((hi - lo) / 2);
                double cosine = Evaluate(ranked.Take(mid).Select(r => r.Layer.Name), FormattableString.Invariant($"{mid} layers in float"));
                if (cosine >= target)
                {
                    (hi, final) = (mid, cosine);
                }
                else
                {
                    lo = mid;
                }
            }

            kept = hi;
        }

        OnnxLayerSensitivity[] sensitivities = [.. ranked.Select((r, i) => new OnnxLayerSensitivity(r.Layer.Name, r.Layer.OpType, r.Layer.Inputs, r.Cosine, i < kept))];
        return new OnnxMixedPrecisionResult(target, _feeds.Count, weightsOnly, allQuantized, final, sensitivities);
    }

    /// <summary>The mean over the feeds of the cosine between a model's outputs and the float model's.</summary>
    /// <remarks>A feed whose outputs are zero in both models counts as 1; outputs of another size than the float model's are an error.</remarks>
    private double Cosine(float[][] outputs) => outputs.Select((o, i) =>
    {
        float[] reference = _reference[i];
        if (o.Length != reference.Length)
        {
            throw new NotSupportedException(FormattableString.Invariant($"Mixed precision compares the model's outputs with the float model's, but on calibration batch {i} the quantized model gave {o.Length} values where the float model gave {reference.Length} (outputs whose size depends on the values cannot be compared)."));
        }

        (bool referenceZero, bool outputZero) = (IsZero(reference), IsZero(o));
        return referenceZero || outputZero ? (referenceZero && outputZero ? 1 : 0) : (double)TensorPrimitives.CosineSimilarity(reference, o);
    }).Average();

    private static bool IsZero(float[] values) => values.Length == 0 || TensorPrimitives.MaxMagnitude(values) == 0;

    /// <summary>Runs a serialized model (the float model or a quantized copy, whose external data is the float model's) on every feed and returns each feed's float outputs, concatenated in output order.</summary>
    private float[][] Outputs(byte[] model, CancellationToken cancellationToken)
    {
        using InferenceSession session = OrtSessions.Create(_floatModel, model, _sessionOptions);
        string[] names = [.. session.OutputMetadata.Where(o => o.Value.ElementType == typeof(float)).Select(o => o.Key)];
        if (names.Length == 0)
        {
            throw new NotSupportedException("Mixed precision compares the model's float outputs with the float model's, and this model has no float output.");
        }

        float[][] outputs = new float[_feeds.Count][];
        for (int f = 0; f < _feeds.Count; f++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            using IDisposableReadOnlyCollection<DisposableNamedOnnxValue> results = session.Run(_feeds[f], names);
            outputs[f] = [.. results.SelectMany(r => ((DenseTensor<float>)r.AsTensor<float>()).Buffer.ToArray())];
        }

        return outputs;
    }

    private static class Log
    {
        public static readonly Action<ILogger, string, double, Exception?> Evaluated =
            LoggerMessage.Define<string, double>(LogLevel.Information, new EventId(1, nameof(Evaluated)), "Mixed precision: {Candidate}, output cosine {Cosine:F6}");
    }
}
