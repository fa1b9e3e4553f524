using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

using Quantization.Onnx.Protos;

namespace Quantization.Onnx;

/// <summary>
/// Calibration feeds for a model from files: one batch per <c>.npz</c> file with one array per model input, or one batch
/// per <c>.npy</c> file for a model with a single input.
/// </summary>
public static class OnnxCalibrationData
{
    /// <summary>
    /// Serves ONNX Runtime feeds for <paramref name="model"/> from a directory that holds either <c>.npz</c> files (NumPy's
    /// <c>savez</c>/<c>savez_compressed</c>; see <see cref="NpzReader"/>), each one batch with one array named after each
    /// of the model's inputs (graph inputs that are not initializers), or <c>.npy</c> files (see <see cref="NpyReader"/>),
    /// each one batch of the model's only input. Files are served in ordinal order of their names, each read when its
    /// batch is requested.
    /// </summary>
    /// <remarks>
    /// An array feeds its input as it is when its dtype is the input's element type; otherwise it is converted when
    /// <see cref="NumPyArray.CanConvert"/> allows it: integers widen into any integer or float type that holds all their
    /// values (int32 into an int64 input, uint8 into a float input), and float data of any precision converts to a float
    /// input by rounding to the nearest value (float64 into a float32 input). Nothing else converts: float data for an
    /// integer input, int64 for a float input or anything for a bool input but bool is an error. The array's rank must be
    /// the input's declared rank and each fixed dimension its declared size (symbolic dimensions take any size). A batch
    /// that misses an input, has an array that is no input, or has a mistyped or misshapen array is an
    /// <see cref="InvalidDataException"/> that names the file and the input, raised when that batch is read.
    /// </remarks>
    /// <param name="model">The model to feed.</param>
    /// <param name="directory">The directory of <c>.npz</c> or of <c>.npy</c> files.</param>
    /// <returns>The source of feeds.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="model"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException"><paramref name="directory"/> is empty.</exception>
    /// <exception cref="DirectoryNotFoundException">The directory does not exist.</exception>
    /// <exception cref="InvalidDataException">The directory holds both <c>.npz</c> and <c>.npy</c> files, or neither, or <c>.npy</c> files for a model with several inputs.</exception>
    /// <exception cref="NotSupportedException">An input is not a tensor, or its element type has no NumPy dtype (string, bfloat16, complex...).</exception>
    public static ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> FromDirectory(OnnxModel model, string directory)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentException.ThrowIfNullOrEmpty(directory);
        if (!Directory.Exists(directory))
        {
            throw new DirectoryNotFoundException($"The calibration directory '{directory}' does not exist.");
        }

        Input[] inputs = Inputs(model);
        string[] npz = SortedFiles(directory, "*.npz"), npy = SortedFiles(directory, "*.npy");
        if (npz.Length > 0 && npy.Length > 0)
        {
            throw new InvalidDataException($"The calibration directory '{directory}' holds both .npz ({npz.Length}) and .npy ({npy.Length}) files; it must hold one kind.");
        }

        if (npz.Length == 0 && npy.Length == 0)
        {
            throw new InvalidDataException($"The calibration directory '{directory}' holds no .npz or .npy files: {Layout(inputs)}");
        }

        if (npz.Length > 0)
        {
            return CalibrationDataSource.FromGenerator(npz.Length, i => Feed(npz[i], NpzReader.Read(npz[i]), inputs));
        }

        if (inputs.Length != 1)
        {
            throw new InvalidDataException($"The calibration directory '{directory}' holds .npy files, which feed a model with one input; this one has {inputs.Length}: {Layout(inputs)}");
        }

        return CalibrationDataSource.FromGenerator(npy.Length, i => Feed(npy[i], new Dictionary<string, NumPyArray> { [inputs[0].Name] = NpyReader.ReadArray(npy[i]) }, inputs));
    }

    private static string[] SortedFiles(string directory, string pattern)
    {
        string[] files = Directory.GetFiles(directory, pattern);
        Array.Sort(files, StringComparer.Ordinal);
        return files;
    }

    private static string Layout(Input[] inputs) =>
        $"write one .npz file per batch with one array per model input ({string.Join(", ", inputs.Select(i => $"{i.Name}: {i.DataType}"))}), or .npy files for a model with one input.";

    /// <summary>The graph inputs that are not initializers, with the dtype and shape they take.</summary>
    private static Input[] Inputs(OnnxModel model)
    {
        HashSet<string> initializers = [.. model.Proto.Graph.Initializer.Select(t => t.Name)];
        return [.. model.Proto.Graph.Input.Where(i => !initializers.Contains(i.Name)).Select(i =>
        {
            TypeProto.Types.Tensor tensor = i.Type?.TensorType ?? throw new NotSupportedException($"The model input '{i.Name}' is not a tensor; calibration files feed tensors only.");
            NpyDataType type = (TensorProto.Types.DataType)tensor.ElemType switch
            {
                TensorProto.Types.DataType.Bool => NpyDataType.Bool,
                TensorProto.Types.DataType.Int8 => NpyDataType.Int8,
                TensorProto.Types.DataType.Uint8 => NpyDataType.UInt8,
                TensorProto.Types.DataType.Int16 => NpyDataType.Int16,
                TensorProto.Types.DataType.Uint16 => NpyDataType.UInt16,
                TensorProto.Types.DataType.Int32 => NpyDataType.Int32,
                TensorProto.Types.DataType.Uint32 => NpyDataType.UInt32,
                TensorProto.Types.DataType.Int64 => NpyDataType.Int64,
                TensorProto.Types.DataType.Uint64 => NpyDataType.UInt64,
                TensorProto.Types.DataType.Float16 => NpyDataType.Float16,
                TensorProto.Types.DataType.Float => NpyDataType.Float32,
                TensorProto.Types.DataType.Double => NpyDataType.Float64,
                TensorProto.Types.DataType other => throw new NotSupportedException($"The model input '{i.Name}' has element type {other}, which no NumPy calibration array feeds."),
            };
            long?[]? dims = tensor.Shape is null ? null : [.. tensor.Shape.Dim.Select(d => d.ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue ? d.DimValue : (long?)null)];
            return new Input(i.Name, type, dims);
        })];
    }

    /// <summary>The feed of one batch: every input's array, checked and converted to the input's type.</summary>
    private static NamedOnnxValue[] Feed(string file, IReadOnlyDictionary<string, NumPyArray> arrays, Input[] inputs)
    {
        string[] missing = [.. inputs.Select(i => i.Name).Where(name => !arrays.ContainsKey(name))];
        if (missing.Length > 0)
        {
            throw new InvalidDataException($"'{file}' has no array for the model input{(missing.Length > 1 ? "s" : "")} {Names(missing)} (its arrays: {Names(arrays.Keys)}).");
        }

        string[] extra = [.. arrays.Keys.Where(name => !inputs.Any(i => i.Name == name))];
        if (extra.Length > 0)
        {
            throw new InvalidDataException($"'{file}' has array{(extra.Length > 1 ? "s" : "")} {Names(extra)}, which {(extra.Length > 1 ? "are not inputs" : "is not an input")} of the model (its inputs: {Names(inputs.Select(i => i.Name))}).");
        }

        return [.. inputs.Select(input => Value(file, input, arrays[input.Name]))];
    }

    private static NamedOnnxValue Value(string file, Input input, NumPyArray array)
    {
        if (!NumPyArray.CanConvert(array.DataType, input.DataType))
        {
            throw new InvalidDataException($"'{file}': the array for the model input '{input.Name}' is {array.DataType}, which does not convert to the input's {input.DataType} without loss.");
        }

        if (input.Dims is { } dims)
        {
            if (dims.Length != array.Shape.Count)
            {
                throw new InvalidDataException($"'{file}': the array for the model input '{input.Name}' has rank {array.Shape.Count} (shape ({string.Join(", ", array.Shape)})) but the input has rank {dims.Length} ({Shape(dims)}).");
            }

            for (int d = 0; d < dims.Length; d++)
            {
                if (dims[d] is long size && size != array.Shape[d])
                {
                    throw new InvalidDataException($"'{file}': the array for the model input '{input.Name}' has shape ({string.Join(", ", array.Shape)}) but the input's dimension {d} is {size} ({Shape(dims)}).");
                }
            }
        }

        NumPyArray data = array.ConvertTo(input.DataType);
        int[] shape = [.. data.Shape];
        return input.DataType switch
        {
            NpyDataType.Bool => NamedOnnxValue.CreateFromTensor(input.Name, new DenseTensor<bool>(data.ToArray<bool>(), shape)),
            NpyDataType.Int8 => NamedOnnxValue.CreateFromTensor(input.Name, new DenseTensor<sbyte>(data.ToArray<sbyte>(), shape)),
            NpyDataType.UInt8 => NamedOnnxValue.CreateFromTensor(input.Name, new DenseTensor<byte>(data.ToArray<byte>(), shape)),
            NpyDataType.Int16 => NamedOnnxValue.CreateFromTensor(input.Name, new DenseTensor<short>(data.ToArray<short>(), shape)),
            NpyDataType.UInt16 => NamedOnnxValue.CreateFromTensor(input.Name, new DenseTensor<ushort>(data.ToArray<ushort>(), shape)),
            NpyDataType.Int32 => NamedOnnxValue.CreateFromTensor(input.Name, new DenseTensor<int>(data.ToArray<int>(), shape)),
            NpyDataType.UInt32 => NamedOnnxValue.CreateFromTensor(input.Name, new DenseTensor<uint>(data.ToArray<uint>(), shape)),
            NpyDataType.Int64 => NamedOnnxValue.CreateFromTensor(input.Name, new DenseTensor<long>(data.ToArray<long>(), shape)),
            NpyDataType.UInt64 => NamedOnnxValue.CreateFromTensor(input.Name, new DenseTensor<ulong>(data.ToArray<ulong>(), shape)),
            NpyDataType.Float16 => NamedOnnxValue.CreateFromTensor(input.Name, new DenseTensor<Float16>(data.ToArray<Half>().Select(h => new Float16(BitConverter.HalfToUInt16Bits(h))).ToArray(), shape)),
            NpyDataType.Float32 => NamedOnnxValue.CreateFromTensor(input.Name, new DenseTensor<float>(data.ToArray<float>(), shape)),
            _ => NamedOnnxValue.CreateFromTensor(input.Name, new DenseTensor<double>(data.ToArray<double>(), shape)),
        };
    }

    private static string Names(IEnumerable<string> names) => string.Join(", ", names.Select(n => $"'{n}'"));

    private static string Shape(long?[] dims) => $"[{string.Join(", ", dims.Select(d => d?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "?"))}]";

    /// <summary>A model input: its name, the dtype it takes and its declared dimensions (null for symbolic ones), or no shape when none is declared.</summary>
    private sealed record Input(string Name, NpyDataType DataType, long?[]? Dims);
}
