// Quantizes ResNet-18 (ONNX, as ML.NET ships it) two ways, weight-only int8 and static W8A8 calibrated on six
// photos, runs all three models in ONNX Runtime on those photos and reports accuracy, size and latency.
// Usage: dotnet run --project samples/QuickStart [output directory]

using System.Diagnostics;

using Microsoft.ML.OnnxRuntime;

using Quantization;
using Quantization.Onnx;
using Quantization.Samples;

string outputDirectory = Path.GetFullPath(args.Length > 0 ? args[0] : Path.Combine(Path.GetTempPath(), "quantization-quickstart"));
Directory.CreateDirectory(outputDirectory);
string weightOnlyPath = Path.Combine(outputDirectory, "resnet18.w8a16.onnx");
string staticPath = Path.Combine(outputDirectory, "resnet18.w8a8.onnx");

Console.WriteLine($"ResNet-18: {ResNet18.ModelPath}");
float[][] inputs = ResNet18.LoadInputs();
Console.WriteLine($"Photos: {string.Join(", ", ResNet18.PhotoPaths.Select(Path.GetFileNameWithoutExtension))}");

// The model declares opset 8; per-channel DequantizeLinear needs 13. BatchNormalization is folded into the Conv
// weights first, so the weights quantized are the ones an integer Conv computes with.
static OnnxModel Prepare()
{
    OnnxModel model = OnnxModel.Load(ResNet18.ModelPath);
    OnnxOpsetUpgrader.Upgrade(model);
    OnnxPreprocessor.FoldBatchNormalization(model);
    return model;
}

// Both quantizers calibrate on the photos: weight-only for bias correction (the mean shift rounding causes), static
// W8A8 for the activation ranges as well.
ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> photos = CalibrationDataSource.FromBatches(inputs.Select(ResNet18.Feed));
Progress<CalibrationProgress> progress = new(p => Console.Write($"\rCalibrating on photo {p.Batches} of {p.Total}"));
OnnxModel weightOnly = Prepare();
IReadOnlyList<OnnxWeightReport> weightReports = await OnnxWeightQuantizer.QuantizeAsync(weightOnly, photos, progress: progress);
weightOnly.Save(weightOnlyPath);

OnnxModel fullInt8 = Prepare();
OnnxStaticQuantizationResult staticResult = await OnnxStaticQuantizer.QuantizeAsync(fullInt8, photos, progress: progress);
Console.WriteLine();
fullInt8.Save(staticPath);

Console.WriteLine();
Console.WriteLine($"Weights ({weightReports.Count} layers, int8 per output channel):");
QuantizationReport report = new();
foreach (OnnxWeightReport weight in weightReports)
{
    report.Add(weight.Report);
}

Console.Write(report.ToTable());
Console.WriteLine($"Static W8A8: {staticResult.Activations.Count} activations quantized (uint8 per tensor), {staticResult.Biases.Count} int32 biases, {staticResult.RaisedWeightScales} weight scales raised to keep biases in range.");
Console.WriteLine();

(string Name, string Path)[] models = [("fp32", ResNet18.ModelPath), ("int8 weight-only (W8A16)", weightOnlyPath), ("int8 static (W8A8)", staticPath)];
long fp32Bytes = new FileInfo(ResNet18.ModelPath).Length;
float[][]? reference = null;
List<InferenceSession> sessions = [];
try
{
    Console.WriteLine("ONNX Runtime, default optimisation level, one thread, features of the six photos vs fp32 (calibrated on the same photos):");
    Console.WriteLine($"{"model",-26} {"file",10} {"size",6} {"cosine mean",12} {"worst",8}");
    foreach ((string name, string path) in models)
    {
        SessionOptions options = new() { IntraOpNumThreads = 1, InterOpNumThreads = 1, ExecutionMode = ExecutionMode.ORT_SEQUENTIAL };
        InferenceSession session = new(path, options);
        sessions.Add(session);
        float[][] features = ResNet18.Features(session, inputs);
        reference ??= features;
        double[] cosines = [.. features.Select((f, i) => Cosine(reference[i], f))];
        long bytes = new FileInfo(path).Length;
        Console.WriteLine(FormattableString.Invariant($"{name,-26} {bytes / 1e6,8:F1}MB {(double)bytes / fp32Bytes,5:F3}x {cosines.Average(),12:F6} {cosines.Min(),8:F6}"));
    }

    // Latency: warm up, then interleave the models round by round so that drift in the machine's load hits all alike.
    const int Rounds = 10;
    List<double>[] times = [.. sessions.Select(_ => new List<double>())];
    for (int round = -1; round < Rounds; round++)
    {
        for (int m = 0; m < sessions.Count; m++)
        {
            foreach (float[] input in inputs)
            {
                long start = Stopwatch.GetTimestamp();
                using IDisposableReadOnlyCollection<DisposableNamedOnnxValue> output = sessions[m].Run(ResNet18.Feed(input));
                if (round >= 0)
                {
                    times[m].Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds);
                }
            }
        }
    }

    Console.WriteLine();
    Console.WriteLine($"Latency per photo ({Rounds * inputs.Length} runs each, after a warm-up round):");
    double fp32Median = Median(times[0]);
    for (int m = 0; m < sessions.Count; m++)
    {
        Console.WriteLine(FormattableString.Invariant($"{models[m].Name,-26} median {Median(times[m]),7:F2} ms  ({fp32Median / Median(times[m]):F2}x fp32)"));
    }
}
finally
{
    sessions.ForEach(s => s.Dispose());
}

Console.WriteLine();
Console.WriteLine($"Written: {weightOnlyPath}");
Console.WriteLine($"         {staticPath}");

static double Cosine(float[] a, float[] b)
{
    double dot = 0, na = 0, nb = 0;
    for (int i = 0; i < a.Length; i++)
    {
        dot += (double)a[i] * b[i];
        na += (double)a[i] * a[i];
        nb += (double)b[i] * b[i];
    }

    return dot / Math.Sqrt(na * nb);
}

static double Median(List<double> values)
{
    double[] sorted = [.. values.Order()];
    return (sorted[(sorted.Length - 1) / 2] + sorted[sorted.Length / 2]) / 2;
}
